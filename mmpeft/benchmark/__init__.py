"""Measure what PEFT saves: step time, peak memory, trainable params, FLOPs.

One run builds every variant of one backbone family at one setting — full
fine-tuning, the frozen stock backbone (the lower bound) and every method of
:mod:`mmpeft.methods` on that host in training and deploy form — and
measures them interleaved, so the ratios to full fine-tuning come from one
machine state. ``tools/benchmark.py`` is the command line; ``import mmpeft``
does not import this package.

One job per module: :mod:`.variants` (derived from the method table),
:mod:`.families` (stock backbones, targets), :mod:`.presets`,
:mod:`.workloads` (a variant ready to step), :mod:`.data` (synthetic
batches), :mod:`.build` (workloads from a setting), :mod:`.memory`,
:mod:`.timing`, :mod:`.counts` (params, FLOPs), :mod:`.run` (the interleaved
measurement) and :mod:`.report` (JSON, markdown, chart).
"""
from .build import build_backbone_workloads, build_model_workloads
from .families import FAMILIES, SWIN, VIT, Family, Target, family_of
from .memory import peak_rise_bytes
from .presets import PRESETS, Preset, preset_backbone_cfg
from .report import frontier_markdown, load_average, markdown, plot, report
from .run import Setting, run
from .timing import TIMERS
from .variants import (ALIASES, GROUPS, MEASUREMENTS, Variant,
                       add_kernel_references, select_variants,
                       skipped_variants)
from .workloads import DEFAULT_OPTIM_WRAPPER

__all__ = [
    'ALIASES', 'DEFAULT_OPTIM_WRAPPER', 'FAMILIES', 'GROUPS', 'MEASUREMENTS',
    'PRESETS', 'SWIN', 'TIMERS', 'VIT', 'Family', 'Preset', 'Setting',
    'Target', 'Variant', 'add_kernel_references', 'build_backbone_workloads',
    'build_model_workloads', 'family_of', 'frontier_markdown', 'load_average',
    'markdown',
    'peak_rise_bytes', 'plot',
    'preset_backbone_cfg', 'report', 'run', 'select_variants',
    'skipped_variants'
]
