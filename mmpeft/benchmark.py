"""Measure what PEFT saves: step time, peak memory, trainable params, FLOPs.

One run builds every variant of one backbone family at one setting — full
fine-tuning, the frozen stock backbone (the lower bound) and the PEFT
backbones in training and deploy form — and measures them interleaved, so the
ratios to full fine-tuning come from one machine state. Two scopes: the
backbone alone (plus a 1x1-conv probe head per output level, trainable in
every variant, so that even the frozen backbone has a training step), or a
whole detector / segmentor from an mm config. ``tools/benchmark.py`` is the
command line.

Peak memory of a step is what the variant keeps resident (weights, buffers
and, for a training step, optimizer state) plus the largest rise of
allocated bytes during the step.
On CUDA the rise comes from ``torch.cuda.max_memory_allocated``; on CPU from
the allocation events of ``torch.profiler`` (``profile_memory=True``), which
see every allocation and free of PyTorch's CPU allocator, those of mmcv's C++
ops included. Both stay per variant although all variants share one process,
and neither counts allocator caching or fragmentation. (Peak RSS cannot do
this: it is process-wide, never decreases, and includes whatever the C
allocator keeps cached.)
"""
import contextlib
import copy
import inspect
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmdet.models.backbones import SwinTransformer
from mmengine.analysis import FlopAnalyzer
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS
from mmseg.models.backbones import SwinTransformer as MMSegSwin
from mmseg.models.backbones import VisionTransformer
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from .models import merge_adapters

MiB = 1 << 20

# The optimizer of configs/_base_/schedules (mmdet's Swin AdamW), built
# through mmengine's DefaultOptimWrapperConstructor like a real run. With a
# paramwise_cfg that constructor leaves frozen weights out of the param
# groups; without one it passes them all and AdamW skips those whose grad is
# None (no state, no weight decay). The audit step reports both facts.
DEFAULT_OPTIM_WRAPPER = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))


# ----------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One way of fine-tuning (or deploying) a backbone family.

    Args:
        name: key in the results (``full`` is the reference of every ratio).
        summary: one line for the table.
        backbone: registered PEFT backbone type; None for the stock backbone.
        freeze_all: freeze every backbone weight (the frozen stock backbone).
        with_cp: activation checkpointing of every block (non-reentrant in
            mmpeft backbones; the stock backbones use reentrant checkpointing,
            which is correct there because their weights all train).
        adapter_cp: the PEFT backbone's ``adapter_cp`` (adapters recomputed
            in backward, frozen blocks not).
        prepare: in-place transform after building, e.g. merging adapters.
        adapter_cfg: overrides the backbone's default adapter.
        trains / infers: which of the two measurements apply.
        default: measured unless ``--variants`` says otherwise.
    """
    name: str
    summary: str
    backbone: Optional[str] = None
    freeze_all: bool = False
    with_cp: bool = False
    adapter_cp: bool = False
    prepare: Optional[Callable[[nn.Module], None]] = None
    adapter_cfg: Optional[dict] = None
    trains: bool = True
    infers: bool = True
    default: bool = True


@dataclass(frozen=True)
class Target:
    """A ratio to the reference variant that we aim to stay under."""
    name: str
    variant: str
    metric: str
    limit: float


@dataclass(frozen=True)
class Family:
    """A stock backbone and the ways of fine-tuning it that we compare."""
    name: str
    stock: type
    variants: Tuple[Variant, ...]
    targets: Tuple[Target, ...] = ()


def resolve_type(backbone_type):
    """The class a config ``type`` names, in the current default scope."""
    if not isinstance(backbone_type, str):
        return backbone_type
    with MODELS.switch_scope_and_registry(None) as registry:
        return registry.get(backbone_type)


def _prune_and_shrink_mimi(backbone: nn.Module) -> None:
    """MiMi's end state: the best-scored neurons over all adapters kept
    until the compression reaches ``MIMI_SIGMA_TARGET`` (one global round
    instead of the training-time rounds), then the adapters shrunk."""
    from mmpeft.engine.mimi_prune_hook import global_prune_masks
    adapters = [adapter for _, adapter in backbone.named_slots()]
    live_after = sum(a.in_dim for a in adapters) // MIMI_SIGMA_TARGET
    masks = global_prune_masks(adapters, live_after)
    for adapter, mask in zip(adapters,
                             masks.split([a.hidden_dim for a in adapters])):
        adapter.set_mask(mask)
    backbone.merge_adapters()


# configs/mimi: sigma0 = 4 (MiMiSwin's default) pruned to sigma_target = 32.
MIMI_SIGMA_TARGET = 32


_COMMON = (
    Variant('full', 'full fine-tuning: stock backbone, every weight trains'),
    Variant('full_cp', 'full fine-tuning, activation checkpointing',
            with_cp=True, infers=False),
    Variant('frozen', 'stock backbone frozen, only the head trains '
            '(lower bound)', freeze_all=True),
)

SWIN = Family(
    name='swin',
    stock=SwinTransformer,
    variants=_COMMON + (
        Variant('mona', 'Mona adapters, fused conv kernels',
                backbone='MonaSwinTransformer'),
        Variant('mona_cp', 'Mona, checkpointed frozen blocks',
                backbone='MonaSwinTransformer', with_cp=True, infers=False),
        Variant('mona_adapter_cp', 'Mona, adapters recomputed in backward '
                '(adapter_cp=True, as in configs/mona)',
                backbone='MonaSwinTransformer', adapter_cp=True,
                infers=False),
        Variant('mona_literal', 'Mona, literal three-conv branch (official '
                'form)', backbone='MonaSwinTransformer',
                adapter_cfg=dict(type='Mona', fused=False), default=False),
        Variant('mona_deploy', 'Mona deploy form (stored fused kernels)',
                backbone='MonaSwinTransformer', prepare=merge_adapters,
                trains=False),
        Variant('mimi', 'MiMi adapters before pruning (sigma0=4)',
                backbone='MiMiSwin'),
        Variant('mimi_shrunk', f'MiMi pruned to sigma={MIMI_SIGMA_TARGET} '
                'and shrunk (deploy)', backbone='MiMiSwin',
                prepare=_prune_and_shrink_mimi, trains=False),
    ),
    targets=(
        Target('Mona training peak memory, checkpointed', 'mona_cp',
               'train_peak_mib', 0.60),
        Target('Mona training peak memory, adapters recomputed',
               'mona_adapter_cp', 'train_peak_mib', 0.80),
        Target('Mona training peak memory, nothing recomputed', 'mona',
               'train_peak_mib', 0.80),
        Target('Mona training step time', 'mona', 'train_ms', 0.85),
        Target('Mona deploy latency / stock', 'mona_deploy', 'infer_ms',
               1.10),
        Target('MiMi shrunk latency / stock', 'mimi_shrunk', 'infer_ms',
               1.05),
    ))

VIT = Family(
    name='vit',
    stock=VisionTransformer,
    variants=_COMMON + (
        Variant('repadapter', 'RepAdapter, unmerged',
                backbone='RepAdapterViT'),
        Variant('repadapter_cp', 'RepAdapter, checkpointed frozen blocks',
                backbone='RepAdapterViT', with_cp=True, infers=False),
        Variant('repadapter_merged', 'RepAdapter merged into qkv / fc1',
                backbone='RepAdapterViT', prepare=merge_adapters,
                trains=False),
    ),
    targets=(
        Target('RepAdapter merged latency / stock', 'repadapter_merged',
               'infer_ms', 1.02),
    ))

FAMILIES = {family.name: family for family in (SWIN, VIT)}
MEASUREMENTS = ('train', 'infer')


def family_of(backbone_type) -> Family:
    """The family whose stock backbone ``backbone_type`` is or derives from."""
    cls = resolve_type(backbone_type)
    if cls is not None and issubclass(cls, (SwinTransformer, MMSegSwin)):
        return SWIN
    if cls is not None and issubclass(cls, VisionTransformer):
        return VIT
    raise ValueError(
        f'No benchmark family for backbone type {backbone_type!r}: the '
        'benchmark knows Swin (mmdet / mmseg SwinTransformer and mmpeft Swin '
        'backbones) and ViT (mmseg VisionTransformer and mmpeft ViT '
        'backbones). Use a config with one of those backbones.')


def select_variants(family: Family,
                    names: Optional[Sequence[str]] = None,
                    measure: Sequence[str] = MEASUREMENTS) -> List[Variant]:
    """The variants to measure: ``names`` in family order, or the defaults,
    less those with nothing to ``measure`` (e.g. a deploy form when only
    training is measured). Variants whose backbone is not registered are
    skipped by default and an error when named."""
    known = {v.name: v for v in family.variants}
    if names:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(
                f'Unknown variants {unknown} for the {family.name} family; '
                f'choose from {list(known)}.')
        chosen = [v for v in family.variants if v.name in names]
        missing = [v.name for v in chosen
                   if v.backbone and MODELS.get(v.backbone) is None]
        if missing:
            raise ValueError(
                f'Variants {missing} need a backbone that is not registered '
                'in this checkout; leave them out of --variants.')
    else:
        chosen = [v for v in family.variants
                  if v.default and (v.backbone is None
                                    or MODELS.get(v.backbone) is not None)]
    chosen = [v for v in chosen if measures(v, measure, 'train')
              or measures(v, measure, 'infer')]
    if 'full' not in [v.name for v in chosen]:
        raise ValueError('The variants must include `full`: every ratio is '
                         'relative to full fine-tuning.')
    return chosen


def measures(variant: Variant, measure: Sequence[str], kind: str) -> bool:
    """Whether ``variant`` gets the ``kind`` ('train' or 'infer') step."""
    return kind in measure and (variant.trains if kind == 'train'
                                else variant.infers)


def skipped_variants(family: Family) -> List[str]:
    """Default variants whose backbone is not registered in this checkout."""
    return [
        v.name for v in family.variants if v.default and v.backbone
        and MODELS.get(v.backbone) is None
    ]


def variant_backbone_cfg(family: Family, base_cfg: dict,
                         variant: Variant) -> dict:
    """The backbone config of ``variant`` from a family backbone config.

    Keeps the architecture arguments the stock backbone accepts, drops
    pretrained loading (benchmarks use random weights), and keeps the
    config's own PEFT arguments when the variant uses the config's class.
    """
    base = dict(base_cfg)
    config_type = base.pop('type')
    base.pop('init_cfg', None)
    base.pop('pretrained', None)
    stock = family.stock
    cls = stock if variant.backbone is None else MODELS.get(variant.backbone)
    config_cls = resolve_type(config_type)
    if config_cls is not cls:
        accepted = inspect.signature(stock.__init__).parameters
        base = {k: v for k, v in base.items() if k in accepted}
    if variant.adapter_cfg is not None:
        base['adapter_cfg'] = variant.adapter_cfg
    base['with_cp'] = variant.with_cp
    if variant.backbone is not None:
        base['adapter_cp'] = variant.adapter_cp
    return dict(type=cls, **base)


def prepare_backbone(backbone: nn.Module, variant: Variant) -> nn.Module:
    if variant.freeze_all:
        backbone.requires_grad_(False)
    if variant.prepare is not None:
        variant.prepare(backbone)
    return backbone


# ------------------------------------------------------------------ presets
@dataclass(frozen=True)
class Preset:
    family: str
    backbone: dict
    img_size: Tuple[int, int]
    batch_size: int


PRESETS: Dict[str, Preset] = {
    'swin-t': Preset('swin', dict(embed_dims=96, depths=(2, 2, 6, 2),
                                  num_heads=(3, 6, 12, 24),
                                  drop_path_rate=0.2), (512, 512), 2),
    'swin-b': Preset('swin', dict(embed_dims=128, depths=(2, 2, 18, 2),
                                  num_heads=(4, 8, 16, 32),
                                  drop_path_rate=0.3), (512, 512), 2),
    'vit-s': Preset('vit', dict(embed_dims=384, num_layers=12, num_heads=6,
                                out_indices=(2, 5, 8, 11),
                                drop_path_rate=0.1), (512, 512), 2),
    'vit-b': Preset('vit', dict(embed_dims=768, num_layers=12, num_heads=12,
                                out_indices=(2, 5, 8, 11),
                                drop_path_rate=0.1), (512, 512), 2),
    # Seconds-long end-to-end runs (tests, smoke checks).
    'tiny-swin': Preset('swin', dict(embed_dims=32, depths=(1, 1, 1, 1),
                                     num_heads=(1, 2, 4, 8), window_size=4),
                        (64, 64), 1),
    'tiny-vit': Preset('vit', dict(embed_dims=32, num_layers=2, num_heads=2,
                                   patch_size=8, out_indices=(0, 1)),
                       (64, 64), 1),
}


def preset_backbone_cfg(preset: Preset, img_size: Tuple[int, int]) -> dict:
    family = FAMILIES[preset.family]
    cfg = dict(type=family.stock, **preset.backbone)
    if family is VIT:
        cfg['img_size'] = tuple(img_size)  # no position-embedding resize
    return cfg


# ------------------------------------------------------------- measurement
def autocast(device: torch.device, amp: Optional[str]):
    """Autocast to ``amp`` ('fp16' / 'bf16') on ``device``, or nothing."""
    if amp is None:
        return contextlib.nullcontext()
    dtype = dict(fp16=torch.float16, bf16=torch.bfloat16)[amp]
    return torch.autocast(device.type, dtype=dtype)


def optim_wrapper_cfg(base: dict, device: torch.device,
                      amp: Optional[str]) -> dict:
    """``base`` with the loss scaler fp16 needs (on CUDA; mmengine's
    AmpOptimWrapper refuses CPU, where bf16 needs no scaler)."""
    cfg = copy.deepcopy(base)
    if amp == 'fp16':
        if device.type != 'cuda':
            raise ValueError(
                'fp16 autocast needs CUDA; use --amp bf16 on CPU.')
        cfg['type'] = 'AmpOptimWrapper'
        cfg['dtype'] = 'float16'
    return cfg


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


TIMERS = dict(
    # Elapsed time: what a user waits for.
    wall=time.perf_counter,
    # CPU seconds of this process (all its threads): on a shared CPU
    # machine, single-threaded, it does not grow when other processes
    # compete for the cores, so ratios stay honest under load.
    cpu=time.process_time)


def timed(fn: Callable[[], object], device: torch.device,
          timer: str = 'wall') -> float:
    """Milliseconds of ``fn()`` on the ``timer`` clock."""
    clock = TIMERS[timer]
    synchronize(device)
    start = clock()
    fn()
    synchronize(device)
    return (clock() - start) * 1e3


def peak_rise_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Largest rise of allocated bytes above the level at the start of
    ``fn()`` (see the module docstring)."""
    if device.type == 'cuda':
        synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    # The profiler cannot size the free of a block allocated before it
    # started, so ``fn`` runs twice and only the second run counts: what
    # it frees was allocated by the first one or is long-lived state.
    with profile(activities=[ProfilerActivity.CPU],
                 profile_memory=True) as prof:
        fn()
        with record_function(_MEASURED_CALL):
            fn()
    events = list(prof.profiler.kineto_results.events())
    window = next(e for e in events if e.name() == _MEASURED_CALL)
    level = peak = 0
    for start_ns, nbytes in sorted((e.start_ns(), e.nbytes()) for e in events
                                   if e.name() == '[memory]'
                                   and e.start_ns() >= window.start_ns()
                                   and e.start_ns() <= window.end_ns()):
        level += nbytes
        peak = max(peak, level)
    return peak


_MEASURED_CALL = 'mmpeft.benchmark.measured_call'


def _storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    storages = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[(storage.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def resident_bytes(module: nn.Module, optimizer=None) -> int:
    """Weights, buffers, gradients and (for training) optimizer state held
    between steps."""
    tensors = [*module.parameters(), *module.buffers()]
    tensors += [p.grad for p in module.parameters() if p.grad is not None]
    for state in (optimizer.state.values() if optimizer else ()):
        tensors += [v for v in state.values() if torch.is_tensor(v)]
    return _storage_bytes(tensors)


def count_params(module: nn.Module) -> Tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(module.parameters())
    return (sum(p.numel() for p in params if p.requires_grad),
            sum(p.numel() for p in params))


def optimizer_state_summary(optimizer, params: Sequence[nn.Parameter]) -> dict:
    """How ``optimizer`` treats ``params``: how many it holds in its param
    groups, how many have state, and that state's tensors and MiB."""
    ids = {id(p) for p in params}
    in_groups = sum(1 for group in optimizer.param_groups
                    for p in group['params'] if id(p) in ids)
    states = [s for p, s in optimizer.state.items() if id(p) in ids and s]
    tensors = [v for s in states for v in s.values() if torch.is_tensor(v)]
    return dict(params_in_groups=in_groups, params_with_state=len(states),
                state_tensors=len(tensors),
                state_mib=_storage_bytes(tensors) / MiB)


def backbone_gflops(backbone: nn.Module, image: torch.Tensor) -> float:
    """Inference GFLOPs of ``backbone`` on one image, counted by mmengine's
    FlopAnalyzer (one multiply-add = one FLOP, the fvcore convention)."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        analyzer = FlopAnalyzer(backbone, (image, ))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        flops = analyzer.total()
    backbone.train(was_training)
    return flops / 1e9


@contextlib.contextmanager
def deployed_weights(module: nn.Module):
    """Every weight ``requires_grad=False`` for the duration, as deployed.

    Inference must not depend on what a variant froze for training, yet it
    does: ATen's matmul folds a 3-D non-contiguous input into one GEMM only
    when the weight requires grad, and mmcv's ``MultiheadAttention``
    (``batch_first=True``, as in mmseg's ViT) feeds exactly such inputs, so a
    frozen ViT runs its attention ~25% slower on CPU than a trainable one.
    Measuring every variant in one state keeps the ratios about architecture.
    """
    flags = [(param, param.requires_grad) for param in module.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


# ---------------------------------------------------------------- workloads
class Workload:
    """One variant ready to step: model, optimizer wrapper, inputs.

    Subclasses define ``module`` (what is trained), ``backbone``,
    ``loss()`` (forward of one training step) and ``infer()``.
    """
    module: nn.Module
    backbone: nn.Module

    def __init__(self, device: torch.device, amp: Optional[str],
                 optim_cfg: dict):
        self.device = device
        self.amp = amp
        self.module.to(device)
        self.optim_wrapper = build_optim_wrapper(
            self.module, optim_wrapper_cfg(optim_cfg, device, amp))

    def loss(self) -> torch.Tensor:
        raise NotImplementedError

    def infer(self) -> object:
        raise NotImplementedError

    def train_step(self) -> None:
        self.module.train()
        self.optim_wrapper.update_params(self.loss())

    def infer_step(self) -> None:
        self.module.eval()
        with torch.no_grad(), deployed_weights(self.module):
            self.infer()

    def audit_step(self) -> dict:
        """One training step that records gradients and optimizer state:
        which weights got a gradient, and what the optimizer keeps."""
        self.module.train()
        self.optim_wrapper.backward(self.loss())
        params = list(self.module.parameters())
        backbone_params = list(self.backbone.parameters())
        backbone_ids = {id(p) for p in backbone_params}
        grads = [p.grad for p in backbone_params if p.grad is not None]
        frozen_with_grad = sum(1 for p in params
                               if not p.requires_grad and p.grad is not None)
        self.optim_wrapper.step()
        optimizer = self.optim_wrapper.optimizer
        audit = dict(
            backbone_grad_mib=_storage_bytes(grads) / MiB,
            frozen_params_with_grad=frozen_with_grad,
            backbone_optimizer=optimizer_state_summary(
                optimizer, backbone_params),
            other_optimizer=optimizer_state_summary(
                optimizer, [p for p in params if id(p) not in backbone_ids]))
        self.optim_wrapper.zero_grad()
        return audit

    def resident_bytes(self, training: bool) -> int:
        """What stays allocated between steps; inference needs no optimizer
        state (a deployed model has none)."""
        return resident_bytes(
            self.module, self.optim_wrapper.optimizer if training else None)


class BackboneWorkload(Workload):
    """A backbone on random images, with a 1x1-conv probe per output level
    whose squared activations are the loss."""

    def __init__(self, backbone: nn.Module, batch_size: int,
                 img_size: Tuple[int, int], device: torch.device,
                 amp: Optional[str], optim_cfg: dict):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(batch_size, 3, *img_size,
                                  generator=generator).to(device)
        self.backbone = backbone
        backbone.to(device).eval()  # mmdet Swin's train() returns None
        with torch.no_grad():
            outs = backbone(self.images)
        self.probe = nn.ModuleList(
            nn.Conv2d(out.shape[1], 16, 1) for out in outs)
        self.module = nn.ModuleDict(dict(backbone=backbone, probe=self.probe))
        super().__init__(device, amp, optim_cfg)

    def loss(self) -> torch.Tensor:
        with autocast(self.device, self.amp):
            outs = self.backbone(self.images)
            return sum(
                probe(out).float().square().mean()
                for probe, out in zip(self.probe, outs))

    def infer(self) -> object:
        with autocast(self.device, self.amp):
            return self.backbone(self.images)


class ModelWorkload(Workload):
    """A whole mm detector / segmentor on a synthetic annotated batch: the
    forward of ``BaseModel.train_step`` and ``test_step``."""

    def __init__(self, model: nn.Module, data: dict, device: torch.device,
                 amp: Optional[str], optim_cfg: dict):
        self.module = model
        self.backbone = model.backbone
        self.train_data = data
        self.test_data = copy.deepcopy(data)
        super().__init__(device, amp, optim_cfg)

    def loss(self) -> torch.Tensor:
        with autocast(self.device, self.amp):
            data = self.module.data_preprocessor(self.train_data, True)
            losses = self.module(**data, mode='loss')
        loss, _ = self.module.parse_losses(losses)
        return loss

    def infer(self) -> object:
        with autocast(self.device, self.amp):
            return self.module.test_step(self.test_data)


# ---------------------------------------------------------------- the run
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


def build_backbone_workloads(backbone_cfg: dict, setting: Setting,
                             variants: Sequence[Variant],
                             optim_cfg: dict = DEFAULT_OPTIM_WRAPPER
                             ) -> Dict[str, Workload]:
    workloads = {}
    for variant in variants:
        torch.manual_seed(0)
        cfg = variant_backbone_cfg(setting.family, backbone_cfg, variant)
        backbone = prepare_backbone(MODELS.build(cfg), variant)
        workloads[variant.name] = BackboneWorkload(
            backbone, setting.batch_size, setting.img_size, setting.device,
            setting.amp, optim_cfg)
    return workloads


def run(workloads: Dict[str, Workload], variants: Sequence[Variant],
        setting: Setting, log: Callable[[str], None] = print) -> dict:
    """Measure every variant, interleaved, and return the results dict."""
    device = setting.device
    by_name = {v.name: v for v in variants}
    image = torch.randn(1, 3, *setting.img_size, device=device)
    results = {}
    for variant in variants:
        workload = workloads[variant.name]
        trainable, total = count_params(workload.backbone)
        model_trainable, model_total = count_params(workload.module)
        results[variant.name] = dict(
            summary=variant.summary,
            # Trainable counts only where the variant trains (a deploy form
            # is measured for inference).
            backbone_trainable_params=trainable if variant.trains else None,
            backbone_params=total,
            model_trainable_params=(model_trainable
                                    if variant.trains else None),
            model_params=model_total,
            backbone_gflops=backbone_gflops(workload.backbone, image))
    def does(variant, kind):
        return measures(variant, setting.measure, kind)

    log('warm-up and audit steps')
    for variant in variants:
        workload, result = workloads[variant.name], results[variant.name]
        if does(variant, 'train'):
            result.update(workload.audit_step())
            for _ in range(setting.warmup):
                workload.train_step()
        if does(variant, 'infer'):
            for _ in range(setting.warmup):
                workload.infer_step()
    log('peak memory')
    for variant in variants:
        workload, result = workloads[variant.name], results[variant.name]
        if does(variant, 'train'):
            rise = peak_rise_bytes(workload.train_step, device)
            result['train_peak_mib'] = (workload.resident_bytes(True) +
                                        rise) / MiB
        if does(variant, 'infer'):
            rise = peak_rise_bytes(workload.infer_step, device)
            result['infer_peak_mib'] = (workload.resident_bytes(False) +
                                        rise) / MiB
    times = {name: dict(train=[], infer=[]) for name in by_name}
    for step_kind in setting.measure:
        names = [v.name for v in variants if does(v, step_kind)]
        for round_ in range(setting.repeats):
            shift = round_ % len(names)  # rotate: no variant always first
            for name in names[shift:] + names[:shift]:
                workload = workloads[name]
                step = (workload.train_step
                        if step_kind == 'train' else workload.infer_step)
                times[name][step_kind].append(
                    timed(step, device, setting.timer))
            log(f'{step_kind} round {round_ + 1}/{setting.repeats}')
    for name, result in results.items():
        for step_kind, samples in times[name].items():
            if samples:
                result[f'{step_kind}_ms'] = statistics.median(samples)
                result[f'{step_kind}_ms_samples'] = [
                    round(s, 2) for s in samples
                ]
    return results


RATIO_METRICS = ('train_ms', 'train_peak_mib', 'infer_ms', 'infer_peak_mib',
                 'backbone_trainable_params', 'backbone_gflops')


def add_ratios(results: dict, reference: str = 'full') -> None:
    """``ratios[metric]`` = value / the reference variant's value."""
    ref = results[reference]
    for result in results.values():
        result['ratios'] = {
            metric: result[metric] / ref[metric]
            for metric in RATIO_METRICS
            if result.get(metric) is not None and ref.get(metric)
        }


def check_targets(family: Family, results: dict) -> List[dict]:
    """Each target of ``family`` whose variant was measured, met or not."""
    checked = []
    for target in family.targets:
        result = results.get(target.variant)
        if result is None or target.metric not in result.get('ratios', {}):
            continue
        ratio = result['ratios'][target.metric]
        checked.append(
            dict(target=target.name, variant=target.variant,
                 metric=target.metric, ratio=ratio, limit=target.limit,
                 met=ratio <= target.limit))
    return checked


def environment() -> dict:
    """Where the numbers came from."""
    import mmengine
    info = dict(torch=torch.__version__, mmengine=mmengine.__version__,
                python=platform.python_version(), machine=platform.machine(),
                torch_threads=torch.get_num_threads(), cpus=os.cpu_count())
    if torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name()
    return info


def load_average() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def report(setting: Setting, variants: Sequence[Variant],
           results: dict, command: str, load_before, load_after) -> dict:
    """The JSON document of one run."""
    add_ratios(results)
    return dict(
        command=command,
        scope=setting.scope,
        source=setting.source,
        family=setting.family.name,
        img_size=list(setting.img_size),
        batch_size=setting.batch_size,
        device=str(setting.device),
        amp=setting.amp,
        repeats=setting.repeats,
        warmup=setting.warmup,
        timer=setting.timer,
        measure=list(setting.measure),
        memory_method=('cuda max_memory_allocated' if setting.device.type ==
                       'cuda' else 'torch.profiler CPU allocation events'),
        environment=environment(),
        load_average_before=load_before,
        load_average_after=load_after,
        notes=setting.notes,
        reference='full',
        variants=results,
        targets=check_targets(setting.family, results),
    )


# ------------------------------------------------------- whole-model scope
def _first_key(cfg, key: str):
    """The first value of ``key`` anywhere in a nested config."""
    if isinstance(cfg, dict):
        if key in cfg:
            return cfg[key]
        children = cfg.values()
    elif isinstance(cfg, (list, tuple)):
        children = cfg
    else:
        return None
    for child in children:
        found = _first_key(child, key)
        if found is not None:
            return found
    return None


def synthetic_batch(scope: str, model_cfg, batch_size: int,
                    img_size: Tuple[int, int]) -> dict:
    """A random annotated batch in the format the scope's models train on."""
    h, w = img_size
    num_classes = _first_key(model_cfg, 'num_classes') or 2
    if scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        with_mask = _first_key(model_cfg, 'mask_head') is not None
        return demo_mm_inputs(batch_size, (3, h, w),
                              num_items=[4] * batch_size,
                              num_classes=num_classes, with_mask=with_mask)
    if scope == 'mmrotate':
        from mmrotate.testing import demo_mm_inputs
        return demo_mm_inputs(batch_size, (3, h, w),
                              num_items=[4] * batch_size,
                              num_classes=num_classes, use_box_type=True)
    if scope == 'mmseg':
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        rng = np.random.RandomState(0)
        inputs, samples = [], []
        for idx in range(batch_size):
            inputs.append(
                torch.from_numpy(rng.randint(0, 255, (3, h, w), np.uint8)))
            sample = SegDataSample(metainfo=dict(
                img_id=idx, img_shape=(h, w), ori_shape=(h, w),
                pad_shape=(h, w), scale_factor=1.0, flip=False,
                flip_direction=None))
            labels = rng.randint(0, num_classes, (1, h, w))
            sample.gt_sem_seg = PixelData(data=torch.from_numpy(labels))
            samples.append(sample)
        return dict(inputs=inputs, data_samples=samples)
    raise ValueError(f'Config default_scope {scope!r} is not benchmarkable; '
                     'use an mmdet, mmseg or mmrotate config.')


def build_model_workloads(cfg, setting: Setting, variants: Sequence[Variant]
                          ) -> Dict[str, Workload]:
    """One detector / segmentor per variant, the config's backbone replaced
    by the variant's, trained with the config's own optim_wrapper."""
    from mmengine.registry import init_default_scope
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    optim_cfg = cfg.get('optim_wrapper', DEFAULT_OPTIM_WRAPPER)
    optim_cfg = {k: v for k, v in optim_cfg.items()}
    workloads = {}
    for variant in variants:
        torch.manual_seed(0)
        model_cfg = copy.deepcopy(cfg.model)
        model_cfg.backbone = variant_backbone_cfg(setting.family,
                                                  cfg.model.backbone, variant)
        model = MODELS.build(model_cfg)
        if setting.device.type == 'cpu':  # SyncBN needs CUDA + a group
            model = revert_sync_batchnorm(model)
        prepare_backbone(model.backbone, variant)
        data = synthetic_batch(scope, cfg.model, setting.batch_size,
                               setting.img_size)
        workloads[variant.name] = ModelWorkload(model, data, setting.device,
                                                setting.amp, optim_cfg)
    return workloads
