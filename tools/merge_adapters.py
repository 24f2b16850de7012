"""Merge the adapters of a training checkpoint offline: deploy checkpoint +
the config that loads it, and optionally the adapter-only checkpoint.

What AdapterMergeHook writes at every save, for a checkpoint you already
have::

    python tools/merge_adapters.py CONFIG work_dir/iter_100.pth \\
        out/deploy.pth [--adapters out/adapters.pth]

writes ``out/deploy.pth`` (RepAdapter folded into qkv / fc1, Mona's conv
branch fused, MiMi shrunk) and ``out/deploy.py``, each atomically.

It never replaces a file it was not asked to write: an output that is the
config, the checkpoint or another output (``OUT`` ending in ``.py`` would
put the config over the deploy checkpoint), or one of the files CONFIG
inherits (``_base_``, even with ``--force``), is refused before anything is
written, and so is an existing ``out/deploy.py`` that is not an earlier
deploy config of ``out/deploy.pth`` (unless ``--force``). CHECKPOINT must be
a training checkpoint of CONFIG: a deploy or adapter-only file, or one that
does not fit, is an error naming it. What it wrote is then checked from
disk: the model is rebuilt from ``out/deploy.py`` and ``out/deploy.pth`` is
loaded into it strictly and compared with the merged weights; the
adapter-only file is read back and checked against the base.
"""
import argparse
import os.path as osp
import re
import sys

import mmpeft  # noqa: F401  registers mmpeft; must precede mmrotate imports
from mmengine.config import Config, DictAction
import torch
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from mmpeft.engine import apply_freeze_policy
from mmpeft.engine.checkpoint_io import (CheckpointMismatchError,
                                         add_allow_nonfinite_argument,
                                         add_allow_pickle_argument,
                                         check_checkpoint_fits, load_file,
                                         take_opt_ins)
from mmpeft.engine.export import (ADAPTER_META_KEY, DEPLOY_META_KEY,
                                  adapter_checkpoint, build_from_config,
                                  check_adapter_checkpoint,
                                  read_adapter_checkpoint, save_atomic,
                                  write_deploy)
from mmpeft.engine.peft_freeze_hook import policy_from_config
from mmpeft.engine.runner import add_debug_argument, run_tool


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
    parser.add_argument(
        '--force',
        action='store_true',
        help='replace an existing OUT.py that is not an earlier deploy config '
        "of OUT (never one of CONFIG's _base_ files)")
    parser.add_argument('--cfg-options',
                        nargs='+',
                        action=DictAction,
                        help='override settings of the config, xxx=yyy format')
    add_allow_pickle_argument(parser)
    add_allow_nonfinite_argument(parser)
    add_debug_argument(parser)
    return parser.parse_args()


def check_paths(args) -> str:
    """The deploy config's path; exit with an error if an output would
    overwrite an input, another output, a file CONFIG inherits, or (without
    ``--force``) an existing file that is not an earlier output."""
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
    bases = inherited_files(args.config)
    for name, path in outputs.items():
        for base in bases:
            if _same_file(path, base):
                sys.exit(f'{name} ({path}) is {base}, a file CONFIG '
                         f'({args.config}) inherits (_base_): replacing it '
                         'would break CONFIG and every config built on it. '
                         'This is refused even with --force: choose another '
                         'OUT.')
    if osp.exists(out_config) and not args.force and \
            not is_deploy_config_of(out_config, args.out):
        sys.exit(f'{out_config} exists: the deploy config of OUT '
                 f'({args.out}) is written beside it with the extension .py, '
                 'and that file is not an earlier deploy config of OUT, so it '
                 'would be lost. Choose another OUT, or pass --force to '
                 'replace it.')
    return out_config


def inherited_files(config: str) -> list:
    """The files ``config`` inherits through ``_base_``, recursively."""
    found, todo = [], [osp.abspath(config)]
    while todo:
        current = todo.pop()
        try:
            bases = Config._get_base_files(current)
        except Exception:  # unreadable: Config.fromfile will say why
            continue
        for base in bases:
            path = osp.abspath(Config._get_cfg_path(base, current)[0])
            if path not in found:
                found.append(path)
                todo.append(path)
    return found


def is_deploy_config_of(path: str, out: str) -> bool:
    """Whether ``path`` is a deploy config written for ``out`` (as
    ``export.deploy_config`` dumps it), read as text: never executed."""
    with open(path, encoding='utf-8', errors='replace') as f:
        text = f.read()
    loads = re.compile(r'^load_from = ' + re.escape(repr(osp.abspath(out))) +
                       r'$', re.MULTILINE)
    return bool(re.search(r'^adapters_merged = True$', text, re.MULTILINE)
                and loads.search(text))


def read_training_checkpoint(model, path: str, cfg: Config) -> dict:
    """The training checkpoint at ``path``, checked to be one of ``cfg``'s
    model (errors name the file and the one to pass instead)."""
    checkpoint = load_file(path)
    meta = checkpoint.get('meta') or {}
    source = meta.get('source_checkpoint') or 'the training checkpoint ' \
        '(work_dir/iter_N.pth)'
    if DEPLOY_META_KEY in meta:
        raise CheckpointMismatchError(
            f'{path} is a deploy checkpoint: its adapters are merged already, '
            'so there is nothing to merge. Pass the training checkpoint it '
            f'was written from: {source}.')
    if ADAPTER_META_KEY in meta:
        raise CheckpointMismatchError(
            f'{path} is an adapter-only checkpoint (no frozen base weights): '
            'merging needs the whole training model. Pass the training '
            f'checkpoint it was written from ({source}); to evaluate it on '
            'its base, use tools/test.py CONFIG BASE_CHECKPOINT --adapter '
            f'{path}.')
    check_checkpoint_fits(model, checkpoint, path, cfg)
    _load_checkpoint_to_model(model, checkpoint, strict=True)
    return checkpoint


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
    checkpoint = load_file(out)  # a changed file fails its SHA-256 here
    try:
        _load_checkpoint_to_model(deploy, checkpoint, strict=True)
    except Exception as error:
        sys.exit(f'{out} read back does not load strictly into the model '
                 f'built from {out_config}: {error}')
    ours, written = merged.state_dict(), deploy.state_dict()
    differ = [k for k in ours if not same_bits(ours[k].cpu(), written[k])]
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
              if not same_bits(v, ours[k].cpu())]
    if differ:
        sys.exit(f'{path} read back differs from the model in {len(differ)} '
                 f'tensors ({differ[:3]}): the disk did not keep what was '
                 'written.')


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (NaN included: a file loaded with --allow-nonfinite
    is compared with what was written, not with the maths)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8),
        b.contiguous().reshape(-1).view(torch.uint8))


def main():
    args = parse_args()
    out_config = check_paths(args)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    take_opt_ins(cfg)  # for this run, not for the deploy config
    model = build_from_config(cfg)
    checkpoint = read_training_checkpoint(model, args.checkpoint, cfg)
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
    run_tool(main)
