"""Merge the adapters of a training checkpoint offline: deploy checkpoint +
the config that loads it, and optionally the adapter-only checkpoint.

What AdapterMergeHook writes at every save, for a checkpoint you already
have::

    python tools/merge_adapters.py CONFIG work_dir/iter_100.pth \\
        out/deploy.pth [--adapters out/adapters.pth]

writes ``out/deploy.pth`` (RepAdapter folded into qkv / fc1, Mona's conv
branch fused, MiMi shrunk) and ``out/deploy.py``, each atomically.

It never destroys its input: an output that is the config, the checkpoint or
another output (``OUT`` ending in ``.py`` would put the config over the
deploy checkpoint) is refused before anything is written. What it wrote is
then checked from disk: the model is rebuilt from ``out/deploy.py`` and
``out/deploy.pth`` is loaded into it strictly and compared with the merged
weights; the adapter-only file is read back and checked against the base.
"""
import argparse
import os.path as osp
import sys

import mmpeft  # noqa: F401  registers mmpeft; must precede mmrotate imports
from mmengine.config import Config, DictAction
import torch
from mmengine.runner import load_checkpoint

from mmpeft.engine import apply_freeze_policy
from mmpeft.engine.checkpoint_io import add_allow_pickle_argument
from mmpeft.engine.export import (adapter_checkpoint, build_from_config,
                                  check_adapter_checkpoint,
                                  read_adapter_checkpoint, save_atomic,
                                  write_deploy)
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


def check_paths(args) -> str:
    """The deploy config's path; exit with an error if an output would
    overwrite an input or another output."""
    stem, ext = osp.splitext(args.out)
    if ext == '.py':
        sys.exit(f'OUT ({args.out}) is the deploy checkpoint; its config is '
                 f'written beside it with the extension .py, so it would '
                 f'overwrite the checkpoint. Pass {stem}.pth.')
    out_config = stem + '.py'
    inputs = dict(CONFIG=args.config, CHECKPOINT=args.checkpoint)
    outputs = dict(OUT=args.out, **{'deploy config': out_config})
    if args.adapters:
        outputs['--adapters'] = args.adapters
    seen = dict(inputs)
    for name, path in outputs.items():
        for other, taken in seen.items():
            if _same_file(path, taken):
                kind = 'input' if other in inputs else 'output'
                sys.exit(f'{name} ({path}) is the same file as the {kind} '
                         f'{other} ({taken}): writing it would destroy '
                         f'that file. Choose another path for {name}.')
        seen[name] = path
    return out_config


def _same_file(a: str, b: str) -> bool:
    if osp.exists(a) and osp.exists(b):
        return osp.samefile(a, b)  # hard links and symlinks too
    return osp.realpath(a) == osp.realpath(b)


def verify_deploy(out: str, out_config: str, merged) -> None:
    """Rebuild from the written config, strict-load the written checkpoint,
    and compare it with the merged weights in memory."""
    deploy_cfg = Config.fromfile(out_config)
    if osp.abspath(deploy_cfg.get('load_from') or '') != osp.abspath(out):
        sys.exit(f'{out_config} loads {deploy_cfg.get("load_from")!r}, not '
                 f'{out}: the written config is wrong.')
    deploy = build_from_config(deploy_cfg)
    try:
        load_checkpoint(deploy, out, map_location='cpu', strict=True)
    except Exception as error:
        sys.exit(f'{out} read back does not load strictly into the model '
                 f'built from {out_config}: {error}')
    ours, written = merged.state_dict(), deploy.state_dict()
    differ = [k for k in ours if not torch.equal(ours[k].cpu(), written[k])]
    if differ:
        sys.exit(f'{out} read back differs from the merged model in '
                 f'{len(differ)} tensors ({differ[:3]}): the disk did not '
                 'keep what was written.')


def verify_adapters(path: str, model) -> None:
    """Read the adapter-only file back and check it against the model it
    came from (base hash, keys, values)."""
    adapters = read_adapter_checkpoint(path)
    check_adapter_checkpoint(model, adapters, model.state_dict(), source=path)
    ours = model.state_dict()
    differ = [k for k, v in adapters['state_dict'].items()
              if not torch.equal(v, ours[k].cpu())]
    if differ:
        sys.exit(f'{path} read back differs from the model in {len(differ)} '
                 f'tensors ({differ[:3]}): the disk did not keep what was '
                 'written.')


def main():
    args = parse_args()
    out_config = check_paths(args)
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

    merged = write_deploy(model, cfg, args.out, out_config, meta)
    verify_deploy(args.out, out_config, merged)
    print(f'deploy checkpoint: {args.out}\ndeploy config:     {out_config} '
          '(read back: rebuilt from the config, checkpoint loaded strictly '
          'and equal to the merged weights: OK)')

    if args.adapters:
        policy = policy_from_config(cfg)
        if policy is not None:
            apply_freeze_policy(model, policy)
        save_atomic(adapter_checkpoint(model, meta=meta), args.adapters)
        verify_adapters(args.adapters, model)
        print(f'adapter-only checkpoint: {args.adapters} (read back and '
              'checked against the base: OK)')


if __name__ == '__main__':
    main()
