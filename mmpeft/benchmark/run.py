"""One run: every variant measured interleaved, so that the ratios to full
fine-tuning come from one machine state."""
import statistics
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .counts import backbone_gflops, count_params
from .families import Family
from .memory import MiB, peak_rise_bytes
from .timing import timed
from .variants import MEASUREMENTS, Variant, measures
from .workloads import Workload


@dataclass
class Setting:
    """What one run measures, recorded with its results."""
    family: Family
    scope: str
    source: str
    img_size: Tuple[int, int]
    batch_size: int
    device: torch.device
    amp: Optional[str] = None
    repeats: int = 5
    warmup: int = 1
    timer: str = 'wall'
    measure: Tuple[str, ...] = MEASUREMENTS
    notes: List[str] = field(default_factory=list)
    # variant -> the variant its ratios are to (default: full)
    references: Dict[str, str] = field(default_factory=dict)


def static_results(workloads: Dict[str, Workload],
                   variants: Sequence[Variant], setting: Setting) -> dict:
    """What needs no step: parameter counts and backbone FLOPs."""
    image = torch.randn(1, 3, *setting.img_size, device=setting.device)
    results = {}
    for variant in variants:
        workload = workloads[variant.name]
        trainable, total = count_params(workload.backbone)
        model_trainable, model_total = count_params(workload.module)
        results[variant.name] = dict(
            summary=variant.summary,
            row=variant.row or variant.name,
            reference=setting.references.get(variant.name, 'full'),
            # Trainable counts only where the variant trains (a deploy form
            # is measured for inference).
            backbone_trainable_params=trainable if variant.trains else None,
            backbone_params=total,
            model_trainable_params=(model_trainable
                                    if variant.trains else None),
            model_params=model_total,
            backbone_gflops=backbone_gflops(workload.backbone, image))
    return results


def warm_up_and_audit(workloads: Dict[str, Workload],
                      variants: Sequence[Variant], setting: Setting,
                      results: dict) -> None:
    """One audit step of each training variant, then the warm-up steps."""
    for variant in variants:
        workload, result = workloads[variant.name], results[variant.name]
        if measures(variant, setting.measure, 'train'):
            result.update(workload.audit_step())
            for _ in range(setting.warmup):
                workload.train_step()
        if measures(variant, setting.measure, 'infer'):
            for _ in range(setting.warmup):
                workload.infer_step()


def peak_memory(workloads: Dict[str, Workload], variants: Sequence[Variant],
                setting: Setting, results: dict) -> None:
    """``<kind>_peak_mib``: resident bytes plus the peak rise of one step."""
    for variant in variants:
        workload, result = workloads[variant.name], results[variant.name]
        for kind in MEASUREMENTS:
            if measures(variant, setting.measure, kind):
                rise = peak_rise_bytes(partial(workload.step, kind),
                                       setting.device)
                result[f'{kind}_peak_mib'] = (
                    workload.resident_bytes(kind == 'train') + rise) / MiB


def step_times(workloads: Dict[str, Workload], variants: Sequence[Variant],
               setting: Setting, results: dict,
               log: Callable[[str], None]) -> None:
    """``<kind>_ms``: the median of ``repeats`` steps, every variant once per
    round, the order rotated each round so no variant always goes first."""
    for kind in setting.measure:
        names = [v.name for v in variants
                 if measures(v, setting.measure, kind)]
        samples = {name: [] for name in names}
        for round_ in range(setting.repeats):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(
                    timed(partial(workloads[name].step, kind), setting.device,
                          setting.timer))
            log(f'{kind} round {round_ + 1}/{setting.repeats}')
        for name, times in samples.items():
            results[name][f'{kind}_ms'] = statistics.median(times)
            results[name][f'{kind}_ms_samples'] = [round(t, 2) for t in times]


def run(workloads: Dict[str, Workload], variants: Sequence[Variant],
        setting: Setting, log: Callable[[str], None] = print) -> dict:
    """Measure every variant, interleaved, and return the results dict."""
    results = static_results(workloads, variants, setting)
    log('warm-up and audit steps')
    warm_up_and_audit(workloads, variants, setting, results)
    log('peak memory')
    peak_memory(workloads, variants, setting, results)
    step_times(workloads, variants, setting, results, log)
    return results
