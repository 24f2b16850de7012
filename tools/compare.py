"""Train and evaluate PEFT methods on one task and write the comparison table.

Each method runs once per seed through tools/train.py (tools/dist_train.sh
with --gpus), tools/count_params.py and tools/test.py (the merged deploy
checkpoint), then its merged inference latency is measured; the table
(markdown, JSON with every seed's values, a PNG of the metric against
trainable parameters, peak memory and step time) lands in the work dir.
A re-run does only the (method, seed) runs that are missing and resumes an
interrupted training from its last checkpoint. Examples::

    # the CPU transfer demo, every method, three seeds (`make compare-demo`)
    OMP_NUM_THREADS=1 python tools/compare.py demo --seeds 3 --jobs 2
    # a real task on 8 GPUs: the shipped configs/<method>/<task>.py
    python tools/compare.py configs/baselines/fasterrcnn_swinb_voc.py \\
        --methods full fixed lora mona --gpus 8 --seeds 3
    # your own full fine-tuning config, your data root, LoRA at 3e-4
    python tools/compare.py my_project/faster_rcnn_swin_mydata.py \\
        --cfg-options train_dataloader.dataset.data_root=/data/x/ \\
        --lr lora=3e-4
"""
import argparse
import os.path as osp

from mmpeft.comparison import (Comparison, ComparisonError, StepFailed,
                               baseline_plan, demo_data_error, demo_plan,
                               markdown, method_names)


def lr_setting(text: str):
    """``METHOD=VALUE`` -> (METHOD, float)."""
    name, sep, value = text.partition('=')
    try:
        if not (sep and name):
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'{text!r}: give METHOD=VALUE, e.g. lora=3e-4')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train and evaluate PEFT methods on one task (through '
        'tools/train.py and tools/test.py), each with several seeds, and '
        'write a markdown / JSON table of the metric (mean, std, the '
        'difference to Full and to Fixed with a paired 95%% t-interval over '
        'seeds), trainable parameters, task-file size, step time, peak '
        'memory and merged latency (ratios to Full on the same host), plus '
        'a PNG of the metric against trainable parameters, peak memory and '
        'step time.')
    parser.add_argument(
        'task',
        help="'demo' (the CPU transfer demo: configs/demo, step 1 included) "
        'or a full fine-tuning config (a configs/baselines/ file uses the '
        'shipped method configs; any other gets generated ones)')
    parser.add_argument(
        '--methods',
        nargs='+',
        default=['all'],
        metavar='METHOD',
        help=f"methods, or 'all' (default): {', '.join(method_names())}. "
        'The Full and Fixed rows of each host are always added: the ratios '
        'and differences need them')
    parser.add_argument(
        '--seeds',
        type=int,
        default=1,
        metavar='N',
        help='runs per method, seeds 0..N-1 (randomness.seed); the table '
        'gives mean +- std and paired intervals (N >= 2)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=[],
        metavar='KEY=VALUE',
        help='given to every training, test and parameter count (data '
        'roots, schedule), as tools/train.py reads them; not to step 1 of '
        'the demo (its source model is cached)')
    parser.add_argument(
        '--lr',
        nargs='+',
        type=lr_setting,
        default=[],
        metavar='METHOD=VALUE',
        help='learning rate of a method (name, e.g. lora, or row key, e.g. '
        'lora_swin); the others keep their config\'s')
    parser.add_argument(
        '--lr-grid',
        nargs='+',
        type=float,
        default=[],
        metavar='FACTOR',
        help="factors of each method's learning rate (its config's or "
        "--lr's), e.g. 0.3 1 3: each is trained with the first seed and "
        'scored on the validation split, the best is used for every seed. '
        'Refused when the task has no validation split apart from its test '
        'split')
    parser.add_argument(
        '--work-dir',
        help='where every method runs and the table is written (default: '
        'work_dirs/compare_<task>)')
    parser.add_argument(
        '--gpus',
        type=int,
        default=0,
        help='train and test with tools/dist_train.sh / dist_test.sh on this '
        'many GPUs (default 0: tools/train.py, tools/test.py)')
    parser.add_argument(
        '--jobs',
        type=int,
        default=1,
        help='runs trained at once (CPU: 2 single-threaded runs on 2 cores, '
        'OMP_NUM_THREADS=1); latency is measured one at a time; each row '
        'records how many ran beside it')
    parser.add_argument(
        '--latency-iters',
        type=int,
        default=20,
        help='timed test steps per model (median reported)')
    parser.add_argument(
        '--source-only',
        action='store_true',
        help='demo: make sure step 1 (the cached source models of the hosts '
        "of --methods) is in place, then stop (what `make demo` runs)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error('--seeds must be at least 1')
    return args


def main(argv=None):
    args = parse_args(argv)
    demo = args.task == 'demo'
    name = 'demo' if demo else osp.splitext(osp.basename(args.task))[0]
    work_dir = osp.abspath(args.work_dir
                           or osp.join('work_dirs', f'compare_{name}'))
    try:
        if args.source_only and not demo:
            raise ComparisonError('--source-only is for the demo task')
        # The method names are checked first: a typo is named before the
        # data is looked at.
        plan = demo_plan(args.methods) if demo else \
            baseline_plan(args.task, args.methods, work_dir)
        problem = demo and demo_data_error()
        if problem:
            raise ComparisonError(problem)
        if args.source_only:
            plan.rows.clear()
        comparison = Comparison(
            plan, work_dir, gpus=args.gpus, jobs=args.jobs,
            latency_iters=args.latency_iters, seeds=range(args.seeds),
            cfg_options=args.cfg_options, lrs=dict(args.lr),
            lr_grid=args.lr_grid)
        if args.source_only:
            comparison.prepare_sources()
            return
        print(f'{len(plan.rows)} methods x {args.seeds} seed(s) on '
              f'{plan.task} into {work_dir}: '
              + ', '.join(row.key for row in plan.rows))
        doc = comparison.run()
    except (ComparisonError, StepFailed) as err:
        raise SystemExit(f'error: {err}')
    print(markdown(doc))
    print(f'written: {work_dir}/comparison.{{md,json,png}}')
    if doc['failures']:
        raise SystemExit(f'{len(doc["failures"])} run(s) failed: '
                         + ', '.join(doc['failures']))


if __name__ == '__main__':
    main()
