"""Print the parameter table of a config's model: the one PEFTFreezeHook logs.

The model is built in the config's own scope (no weights loaded, nothing
downloaded) and the config's PEFTFreezeHook policy applied; without that hook
the flags are those the model sets itself (mmpeft backbones freeze all but
their adapters). Example::

    python tools/count_params.py configs/mona/maskrcnn_swinb_coco.py
"""
import argparse
from dataclasses import asdict

import mmpeft  # noqa: F401  registers mmpeft; must precede mmrotate imports
from mmengine.config import Config, DictAction

from mmpeft.engine import apply_freeze_policy, count_params, format_table
from mmpeft.engine.export import build_from_config, write_text_atomic
from mmpeft.engine.peft_freeze_hook import policy_from_config


def parse_args():
    parser = argparse.ArgumentParser(
        description='Count total and trainable parameters of the model of a '
        'config, per group (pretrained backbone, adapters, neck, head, ...).')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--json',
                        metavar='FILE',
                        help='also write the table as JSON (the format of '
                        'work_dir/peft_params.json)')
    parser.add_argument('--cfg-options',
                        nargs='+',
                        action=DictAction,
                        help='override settings of the config, xxx=yyy format')
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    model = build_from_config(cfg)
    policy = policy_from_config(cfg)
    if policy is None:
        print('No PEFTFreezeHook in custom_hooks: flags as the model sets '
              'them.')
    else:
        apply_freeze_policy(model, policy)
    table = count_params(model, policy=policy and asdict(policy))
    print(format_table(table))
    if args.json:
        write_text_atomic(table.to_json() + '\n', args.json)


if __name__ == '__main__':
    main()
