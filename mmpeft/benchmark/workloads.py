"""Variants ready to step: a model, its optimizer wrapper and its inputs.

Two scopes: the backbone alone (plus a 1x1-conv probe head per output level,
trainable in every variant, so that even the frozen backbone has a training
step), or a whole detector / segmentor of an mm config.
"""
import contextlib
import copy
from typing import Optional, Tuple

import torch
from mmengine.optim import build_optim_wrapper
from torch import nn

from .memory import MiB, optimizer_state_summary, resident_bytes, \
    storage_bytes

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

    def step(self, kind: str) -> None:
        """One ``kind`` ('train' or 'infer') step."""
        (self.train_step if kind == 'train' else self.infer_step)()

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
            backbone_grad_mib=storage_bytes(grads) / MiB,
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
