"""Benchmark PEFT against full fine-tuning: step time, peak memory, trainable
parameters and backbone FLOPs of every variant of one backbone family,
measured interleaved in one run.

Backbone scope (default; a built-in preset):
    python tools/benchmark.py --preset swin-t
    python tools/benchmark.py --preset vit-s --amp bf16
Whole detector / segmentor from a config (its backbone is swapped per variant):
    python tools/benchmark.py --config configs/baselines/maskrcnn_swinb_coco.py

Prints markdown tables (ratios to full fine-tuning, targets, optimizer
audit) and writes ``<out>.json`` and a bar chart ``<out>.png``. The
variants come from the method table (mmpeft/methods.py); how peak memory is
measured on CPU and on CUDA: see :mod:`mmpeft.benchmark.memory`.
"""
import argparse
import json
import logging
import os.path as osp
import shlex
import sys

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger
from mmengine.utils import mkdir_or_exist

import mmpeft  # noqa: F401  (registers the PEFT backbones)
from mmpeft import benchmark as bench


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Variants per family (derived from mmpeft/methods.py): ' +
        '; '.join(f'{f.name}: ' + ', '.join(v.name for v in f.variants)
                  for f in bench.FAMILIES.values()) + '. Aliases: ' +
        ', '.join(f'{old} = {new}' for old, new in bench.ALIASES.items()))
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        '--preset', choices=sorted(bench.PRESETS),
        help='backbone-only benchmark of a built-in backbone (default '
        'swin-t when no --config is given)')
    source.add_argument(
        '--config', help='mm config: benchmark the whole model it builds')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, default={},
        help='override config keys, e.g. model.backbone.depths=[2,2,6,2]')
    parser.add_argument('--variants', nargs='+',
                        help='variants to measure (default: all registered '
                        'default variants of the family); must include full. '
                        '`all-train` selects every method\'s training cost: '
                        'the references, the policies, every method and its '
                        'host forms (late blocks, bf16 saves, sdpa)')
    parser.add_argument('--img-size', type=int, nargs='+',
                        help='input H [W] (default: the preset\'s, or 512)')
    parser.add_argument('--batch-size', type=int,
                        help='images per step (default: the preset\'s, or 2)')
    parser.add_argument(
        '--measure', nargs='+', choices=bench.MEASUREMENTS,
        default=list(bench.MEASUREMENTS),
        help='what to measure: train steps, inference, or both (default)')
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed steps per variant (median reported)')
    parser.add_argument('--warmup', type=int, default=1,
                        help='untimed steps per variant before measuring')
    parser.add_argument(
        '--timer', choices=sorted(bench.TIMERS), default='wall',
        help='clock of the step times: wall (elapsed) or cpu (CPU time of '
        'this process; with --threads 1 it is robust to other processes '
        'sharing the cores)')
    parser.add_argument('--amp', choices=('bf16', 'fp16'),
                        help='autocast dtype (fp16 needs CUDA)')
    parser.add_argument('--device', default=None,
                        help='cpu or cuda[:i] (default: cuda if available)')
    parser.add_argument('--threads', type=int,
                        help='torch intra-op threads (default: torch\'s)')
    parser.add_argument('--out', help='output path without extension '
                        '(default: work_dirs/benchmark/<preset or config>)')
    args = parser.parse_args(argv)
    if args.img_size and len(args.img_size) not in (1, 2):
        parser.error('--img-size takes H or H W')
    if args.repeats < 1 or args.warmup < 0:
        parser.error('--repeats must be >= 1 and --warmup >= 0')
    if not args.config and not args.preset:
        args.preset = 'swin-t'
    if args.cfg_options and not args.config:
        parser.error('--cfg-options needs --config')
    return args


def _img_size(args, default):
    if not args.img_size:
        return tuple(default)
    return (args.img_size[0], args.img_size[-1])


def _with_references(setting, backbone_cfg, variants):
    """``variants`` plus the full fine-tuning references with their
    attention kernels (like for like), recorded in ``setting``."""
    variants, setting.references, notes = bench.add_kernel_references(
        setting.family, backbone_cfg, variants)
    setting.notes.extend(notes)
    return variants


def build(args, device):
    """(setting, variants, workloads) for the preset or config in ``args``."""
    if args.config:
        cfg = Config.fromfile(args.config)
        cfg.merge_from_dict(args.cfg_options)
        if cfg.get('custom_imports'):
            from mmengine.utils import import_modules_from_strings
            import_modules_from_strings(**cfg.custom_imports)
        from mmengine.registry import init_default_scope
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        family = bench.family_of(cfg.model.backbone.type)
        setting = bench.Setting(
            family=family, scope='model', source=args.config,
            img_size=_img_size(args, (512, 512)),
            batch_size=args.batch_size or 2, device=device, amp=args.amp,
            repeats=args.repeats, warmup=args.warmup, timer=args.timer,
            measure=tuple(args.measure))
        variants = _with_references(
            setting, cfg.model.backbone,
            bench.select_variants(family, args.variants, args.measure))
        workloads = bench.build_model_workloads(cfg, setting, variants)
    else:
        preset = bench.PRESETS[args.preset]
        family = bench.FAMILIES[preset.family]
        setting = bench.Setting(
            family=family, scope='backbone', source=args.preset,
            img_size=_img_size(args, preset.img_size),
            batch_size=args.batch_size or preset.batch_size, device=device,
            amp=args.amp, repeats=args.repeats, warmup=args.warmup,
            timer=args.timer, measure=tuple(args.measure))
        backbone_cfg = bench.preset_backbone_cfg(preset, setting.img_size)
        variants = _with_references(
            setting, backbone_cfg,
            bench.select_variants(family, args.variants, args.measure))
        workloads = bench.build_backbone_workloads(backbone_cfg, setting,
                                                   variants)
    if not args.variants:
        for name in bench.skipped_variants(family):
            setting.notes.append(
                f'{name}: skipped, its backbone is not registered in this '
                'checkout')
    return setting, variants, workloads


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or (
        'cuda' if torch.cuda.is_available() else 'cpu'))
    if args.timer == 'cpu' and device.type != 'cpu':
        raise ValueError('--timer cpu measures host CPU time; use the wall '
                         f'timer on {device.type}.')
    load_before = bench.load_average()
    # mmengine logs one warning per frozen weight it leaves out of the
    # optimizer (and its paramwise options); the audit table says it once.
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        setting, variants, workloads = build(args, device)
    finally:
        logger.setLevel(level)
    log = lambda msg: print(f'[benchmark] {msg}', file=sys.stderr)  # noqa
    log(f"{len(variants)} variants: {', '.join(v.name for v in variants)}")
    results = bench.run(workloads, variants, setting, log)
    command = 'python ' + ' '.join(
        shlex.quote(a) for a in ['tools/benchmark.py'] +
        list(sys.argv[1:] if argv is None else argv))
    doc = bench.report(setting, results, command, load_before,
                       bench.load_average())
    out = args.out or osp.join(
        'work_dirs', 'benchmark',
        args.preset or osp.splitext(osp.basename(args.config))[0])
    mkdir_or_exist(osp.dirname(osp.abspath(out)))
    with open(out + '.json', 'w') as f:
        json.dump(doc, f, indent=2)
    bench.plot(doc, out + '.png')
    print(f'`{command}`\n')
    print(bench.markdown(doc))
    log(f'wrote {out}.json and {out}.png')
    return doc


if __name__ == '__main__':
    main()
