"""Train a model from an mmdet, mmseg or mmrotate config.

One script for the three codebases: the config's ``default_scope`` picks the
registries, and mmengine's Runner (or the config's own ``runner_type``) does
the rest. Arguments follow mmdet's tools/train.py.
"""
import argparse
import logging

import mmpeft  # noqa: F401  registers mmpeft; must precede mmrotate imports
from mmengine.logging import print_log

from mmpeft.engine import check_resumable_file
from mmpeft.engine.preflight import preflight
from mmpeft.engine.runner import (build_runner, load_config,
                                   parse_launch_args, run_tool)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Train a detector, segmentor or rotated detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='enable automatically scaling LR (needs `auto_scale_lr` in the '
        'config)')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    parser.add_argument(
        '--resume-lr',
        type=float,
        metavar='LR',
        help='with --resume: the learning rate to go on with (the largest of '
        'the param groups; the others and the schedule scale with it). The '
        'checkpoint restores its own lr, so a lower optimizer.lr in the '
        'config or --cfg-options is ignored on resume; NaNGuardHook prints '
        'this option when a run diverges')
    return parse_launch_args(parser)


def main():
    args = parse_args()

    cfg = load_config(args.config, args.launcher, args.cfg_options,
                      args.work_dir)

    if args.amp:
        optim_wrapper = cfg.optim_wrapper.type
        if optim_wrapper == 'AmpOptimWrapper':
            print_log(
                'AMP training is already enabled in your config.',
                logger='current',
                level=logging.WARNING)
        else:
            assert optim_wrapper == 'OptimWrapper', (
                '`--amp` is only supported when the optimizer wrapper type is '
                f'`OptimWrapper` but got {optim_wrapper}.')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise RuntimeError('Can not find "auto_scale_lr.base_batch_size" '
                               'in your configuration file.')
        cfg.auto_scale_lr.enable = True

    # resume is determined in this priority: resume from > auto_resume
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        # A deploy or adapter-only file stops here, naming the training
        # checkpoint to resume from instead.
        check_resumable_file(args.resume)
        cfg.resume = True
        cfg.load_from = args.resume

    if args.resume_lr is not None:
        if args.resume is None:
            raise SystemExit('--resume-lr sets the learning rate of a resumed '
                             'run: add --resume [CHECKPOINT], or set '
                             'optim_wrapper.optimizer.lr for a new run.')
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
            dict(type='ResumeLRHook', lr=args.resume_lr)]

    preflight(cfg, args.config, 'train')
    runner = build_runner(cfg, training=True)
    runner.train()


if __name__ == '__main__':
    run_tool(main)
