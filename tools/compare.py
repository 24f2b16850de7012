"""Train and evaluate PEFT methods on one task and write the comparison table.

Each method runs through tools/train.py (tools/dist_train.sh with --gpus),
tools/count_params.py and tools/test.py (the merged deploy checkpoint), then
its merged inference latency is measured; the table (markdown, JSON and a
PNG of the metric against trainable parameters) lands in the work dir.
A re-run skips every method whose results exist and resumes an interrupted
training from its last checkpoint. Examples::

    # the CPU transfer demo, all thirteen methods (`make compare-demo`)
    OMP_NUM_THREADS=1 python tools/compare.py demo --jobs 2
    # a real task on 8 GPUs: the shipped configs/<method>/<task>.py
    python tools/compare.py configs/baselines/fasterrcnn_swinb_voc.py \\
        --methods full fixed lora mona --gpus 8
    # your own full fine-tuning config: method configs are generated
    python tools/compare.py my_project/faster_rcnn_swin_mydata.py
"""
import argparse
import os.path as osp

from mmpeft.comparison import (ALL_METHODS, Comparison, ComparisonError,
                               StepFailed, baseline_plan, demo_plan, markdown)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train and evaluate PEFT methods on one task (through '
        'tools/train.py and tools/test.py) and write a markdown / JSON table '
        'of metric, trainable parameters, task-file size, step time, peak '
        'memory and merged latency (ratios to Full on the same host), plus '
        'a PNG of metric against trainable parameters.')
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
        help=f"methods, or 'all' (default): {', '.join(ALL_METHODS)}. The "
        'Full row of each host is always added: the ratios need it')
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
        help='methods trained at once (CPU: 2 single-threaded runs on 2 '
        'cores, OMP_NUM_THREADS=1); latency is measured one at a time')
    parser.add_argument(
        '--latency-iters',
        type=int,
        default=20,
        help='timed test steps per model (median reported)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    name = 'demo' if args.task == 'demo' else osp.splitext(
        osp.basename(args.task))[0]
    work_dir = args.work_dir or osp.join('work_dirs', f'compare_{name}')
    try:
        plan = demo_plan(args.methods) if args.task == 'demo' else \
            baseline_plan(args.task, args.methods, work_dir)
    except ComparisonError as err:
        raise SystemExit(f'error: {err}')
    print(f'{len(plan.rows)} methods on {plan.task} into {work_dir}: '
          + ', '.join(row.key for row in plan.rows))
    try:
        doc = Comparison(plan, work_dir, gpus=args.gpus, jobs=args.jobs,
                         latency_iters=args.latency_iters).run()
    except StepFailed as err:  # step 1 of the demo: every row needs it
        raise SystemExit(f'error: {err}')
    print(markdown(doc))
    print(f'written: {work_dir}/comparison.{{md,json,png}}')
    if doc['failures']:
        raise SystemExit(f'{len(doc["failures"])} method(s) failed: '
                         + ', '.join(doc['failures']))


if __name__ == '__main__':
    main()
