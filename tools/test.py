"""Test (and evaluate) a checkpoint with an mmdet, mmseg or mmrotate config.

One script for the three codebases: the config's ``default_scope`` picks the
registries and the config's stock evaluator computes the metrics, which are
logged and printed at the end as one JSON line. Arguments follow mmdet's
tools/test.py. The checkpoint must fit the config (every weight loaded, a
deploy file with the deploy config, a training file with the training one),
and is read with ``weights_only=True`` unless ``--allow-pickle``.
"""
import argparse
import json

import mmpeft  # noqa: F401  registers mmpeft; must precede mmrotate imports
from mmengine.dist import is_main_process
from mmengine.evaluator import DumpResults

from mmpeft.engine.checkpoint_io import (ALLOW_PARTIAL_KEY,
                                         DEPLOY_CONFIG_KEY, is_deploy_config,
                                         set_opt_in)
from mmpeft.engine.preflight import preflight
from mmpeft.engine.runner import (build_runner, load_config,
                                   parse_launch_args, run_tool)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a detector, segmentor or rotated '
        'detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--adapter',
        metavar='CKPT',
        help='adapter-only checkpoint (`*_adapters.pth`) to load on top of '
        '`checkpoint`, the frozen base it was trained on (checked by hash)')
    parser.add_argument(
        '--allow-partial',
        action='store_true',
        help='evaluate even if the checkpoint leaves model weights unloaded '
        'or has unexpected ones (a warning names them); by default that is '
        'an error. Config equivalent: mmpeft_allow_partial = True')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        type=str,
        help='mmdet / mmrotate: dump predictions to a pickle file for '
        'offline evaluation; mmseg: directory to write the predicted label '
        'maps to')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved (mmdet / mmrotate:'
        ' relative paths are under work_dir/timestamp)')
    return parse_launch_args(parser)


def trigger_visualization_hook(cfg, show_dir):
    """Make the config's visualization hook paint predictions to show_dir."""
    if 'visualization' not in cfg.default_hooks:
        raise RuntimeError(
            'VisualizationHook must be included in default_hooks, e.g. '
            '"visualization=dict(type=\'DetVisualizationHook\')"')
    cfg.default_hooks.visualization.draw = True
    if cfg.default_scope == 'mmseg':
        # SegVisualizationHook writes through the visualizer's backends, and
        # only every `interval`-th image unless told otherwise.
        cfg.visualizer.save_dir = show_dir
        cfg.default_hooks.visualization.interval = 1
    else:
        cfg.default_hooks.visualization.test_out_dir = show_dir


def dump_results_metric(scope, out_file):
    """The codebase's metric that pickles predictions (mmdet's RLE-encodes
    masks so that the file stays small)."""
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        return DumpDetResults(out_file_path=out_file)
    return DumpResults(out_file_path=out_file)


def main():
    args = parse_args()

    cfg = load_config(args.config, args.launcher, args.cfg_options,
                      args.work_dir)

    # Recognise a deploy config by the file it loads before that is replaced.
    cfg[DEPLOY_CONFIG_KEY] = is_deploy_config(cfg)
    cfg.load_from = args.checkpoint
    if args.allow_partial:  # for this run: never into a written config
        set_opt_in(ALLOW_PARTIAL_KEY)
    if args.adapter is not None:
        cfg.custom_hooks = [
            *cfg.get('custom_hooks', []),
            dict(type='AdapterLoadHook', checkpoint=args.adapter)
        ]

    if args.show_dir:
        trigger_visualization_hook(cfg, args.show_dir)

    if args.out is not None and cfg.default_scope == 'mmseg':
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True

    preflight(cfg, args.config, 'test')
    runner = build_runner(cfg)

    if args.out is not None and cfg.default_scope != 'mmseg':
        assert args.out.endswith(('.pkl', '.pickle')), \
            'The dump file must be a pkl file.'
        runner.test_evaluator.metrics.append(
            dump_results_metric(cfg.default_scope, args.out))

    metrics = runner.test()
    if is_main_process():
        print(json.dumps(metrics, default=float))


if __name__ == '__main__':
    run_tool(main)
