"""LoRA (Hu et al., ICLR 2022, arXiv 2106.09685): a low-rank weight update.

``y = W x + b + (alpha / r) B A dropout(x)`` with A (r, in) and B (out, r);
B starts at zero, so the layer starts as the pretrained one. In eval mode the
update is the weight ``(alpha / r) B A``, which merging adds into ``W``.
Parameter names, shapes and init follow ``loralib`` (``lora_A``
kaiming-uniform with a = sqrt(5), ``lora_B`` zero).

On a fused weight (a qkv projection) ``enable_lora`` is loralib's
``MergedLinear``: the output splits into ``len(enable_lora)`` equal slices,
and each enabled slice gets its own rank-r pair, the others none. With
``(True, False, True)`` q and v are adapted and k is not; ``lora_A`` stacks
the pairs' A (2r, in), ``lora_B`` their B (2 out/3, r), and loralib computes
slice j from rows ``j r ... (j + 1) r`` of ``A x`` (a grouped 1x1 conv),
zero-padding the disabled slices. The Mona paper's LoRA baseline is this
with r = 64 and loralib's default ``lora_alpha = 1`` (scale 1/64).
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import (WeightAdapter, check_dropout, check_positive, check_scale,
                   register_adapter)


@register_adapter
class LoRA(WeightAdapter):
    """Args:
        in_features / out_features: the adapted linear layer's shape.
        r: rank of the update (of each enabled slice).
        alpha: the update is scaled by ``alpha / r`` (None: ``alpha = r``,
            scale 1; loralib's own default is 1, scale 1 / r).
        dropout: dropout on the input of the low-rank path.
        enable_lora: which equal output slices of a fused weight get an
            update, e.g. ``(True, False, True)``: q and v of a fused qkv.
            None: one update of the whole weight.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 r: int = 8,
                 alpha: Optional[float] = None,
                 dropout: float = 0.0,
                 enable_lora: Optional[Sequence[bool]] = None):
        super().__init__()
        check_positive('r', r, 'LoRA')
        if alpha is not None:
            check_scale('alpha', alpha, 'LoRA')
        check_dropout(dropout, 'LoRA')
        self.enable_lora = self._check_slices(enable_lora, out_features)
        self.r = r
        self.scaling = (r if alpha is None else alpha) / r
        enabled = sum(self.enable_lora)
        self.slice_dim = out_features // len(self.enable_lora)
        self.lora_A = nn.Parameter(torch.empty(r * enabled, in_features))
        self.lora_B = nn.Parameter(torch.empty(self.slice_dim * enabled, r))
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    @staticmethod
    def _check_slices(enable_lora, out_features: int) -> tuple:
        if enable_lora is None:
            return (True, )
        if isinstance(enable_lora, (str, bytes)) or not isinstance(
                enable_lora, Sequence) or not all(
                    isinstance(e, bool) for e in enable_lora) or not any(
                        enable_lora):
            raise ValueError(
                'LoRA: enable_lora must be a list of True / False, one per '
                'equal output slice of the weight, with at least one True '
                f'(e.g. [True, False, True]: q and v of a qkv); got '
                f'{enable_lora!r}. Fix enable_lora in the adapter config.')
        if out_features % len(enable_lora):
            raise ValueError(
                f'LoRA: enable_lora has {len(enable_lora)} slices, which do '
                f'not divide the {out_features} outputs of the weight; give '
                'enable_lora one entry per equal slice (3 for a fused qkv) '
                'in the adapter config.')
        return tuple(enable_lora)

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def _pad(self, update: torch.Tensor) -> torch.Tensor:
        """(..., enabled, d) slice updates -> (..., out_features), zeros in
        the slices that are not enabled."""
        if all(self.enable_lora):
            return update.flatten(-2)
        out = update.new_zeros(*update.shape[:-2], len(self.enable_lora),
                               self.slice_dim)
        out[..., [i for i, on in enumerate(self.enable_lora) if on], :] = \
            update
        return out.flatten(-2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.linear(self.dropout(x), self.lora_A)
        if len(self.enable_lora) == 1:
            return F.linear(hidden, self.lora_B) * self.scaling
        enabled = sum(self.enable_lora)
        update = torch.einsum(
            '...gr,gdr->...gd', hidden.unflatten(-1, (enabled, self.r)),
            self.lora_B.view(enabled, self.slice_dim, self.r))
        return self._pad(update) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        enabled = sum(self.enable_lora)
        update = torch.bmm(
            self.lora_B.view(enabled, self.slice_dim, self.r),
            self.lora_A.view(enabled, self.r, -1))  # (enabled, d, in)
        return self._pad(update.permute(2, 0, 1)).t() * self.scaling

    def extra_repr(self) -> str:
        slices = ('' if len(self.enable_lora) == 1 else
                  f', enable_lora={list(self.enable_lora)}')
        return f'r={self.r}, scaling={self.scaling}{slices}'
