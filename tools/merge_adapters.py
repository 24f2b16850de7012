"""Merge the adapters of a training checkpoint offline: deploy checkpoint +
the config that loads it, and optionally the adapter-only checkpoint.

What AdapterMergeHook writes at every save, for a checkpoint you already
have::

    python tools/merge_adapters.py CONFIG work_dir/iter_100.pth \\
        out/deploy.pth [--adapters out/adapters.pth]

writes ``out/deploy.pth`` (RepAdapter folded into qkv / fc1, Mona's conv
branch fused, MiMi shrunk) and ``out/deploy.py``, then rebuilds the model from
``out/deploy.py`` and loads ``out/deploy.pth`` into it strictly as a check.
"""
import argparse
import os.path as osp

import mmpeft  # noqa: F401  registers mmpeft; must precede mmrotate imports
from mmengine.config import Config, DictAction
from mmengine.runner import load_checkpoint

from mmpeft.engine import apply_freeze_policy
from mmpeft.engine.checkpoint_io import add_allow_pickle_argument
from mmpeft.engine.export import (adapter_checkpoint, build_from_config,
                                  save_atomic, write_deploy)
from mmpeft.engine.peft_freeze_hook import policy_from_config


def parse_args():
    parser = argparse.ArgumentParser(
        description='Write the deploy (adapters merged) checkpoint and config '
        'of a training checkpoint, and optionally its adapter-only checkpoint.'
    )
    parser.add_argument('config', help='the training config')
    parser.add_argument('checkpoint', help='a training checkpoint of it')
    parser.add_argument(
        'out',
        help='deploy checkpoint to write; the deploy config is written '
        'beside it with the extension .py')
    parser.add_argument(
        '--adapters',
        metavar='FILE',
        help='also write the adapter-only checkpoint (trainable tensors by '
        "the config's PEFTFreezeHook policy, with the frozen base's hash)")
    parser.add_argument('--cfg-options',
                        nargs='+',
                        action=DictAction,
                        help='override settings of the config, xxx=yyy format')
    add_allow_pickle_argument(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    model = build_from_config(cfg)
    checkpoint = load_checkpoint(model,
                                 args.checkpoint,
                                 map_location='cpu',
                                 strict=True)
    meta = dict(source_checkpoint=osp.abspath(args.checkpoint))
    if 'dataset_meta' in checkpoint.get('meta', {}):
        meta['dataset_meta'] = checkpoint['meta']['dataset_meta']

    out_config = osp.splitext(args.out)[0] + '.py'
    merged = write_deploy(model, cfg, args.out, out_config, meta)
    deploy_model = build_from_config(Config.fromfile(out_config))
    deploy_model.load_state_dict(merged.state_dict(), strict=True)
    print(f'deploy checkpoint: {args.out}\ndeploy config:     {out_config} '
          '(rebuilt and loaded strictly: OK)')

    if args.adapters:
        policy = policy_from_config(cfg)
        if policy is not None:
            apply_freeze_policy(model, policy)
        save_atomic(adapter_checkpoint(model, meta=meta), args.adapters)
        print(f'adapter-only checkpoint: {args.adapters}')


if __name__ == '__main__':
    main()
