"""The bottleneck adapter of the Mona paper's Adapter and AdaptFormer
baselines (arXiv 2408.08345; its released code, Leiyi-Hu/mona,
``Swin-Transformer-Object-Detection/mmdet/models/backbones/
swin_transformer_{adapter,adaptformer}.py``, class ``Adapter`` in both).

``delta(x) = s * project2(dropout(gelu(project1(x))))`` with ``project1``
C -> 64 and ``project2`` 64 -> C linears (biases), exact (erf) GELU and
dropout 0.1. The Adapter baseline adds it to its input (s = 1) on the
attention and FFN outputs inside drop-path (``series``); the AdaptFormer
baseline returns only the branch, scaled by s = 0.1, parallel to the FFN
(``parallel``). Both backbones' ``init_weights`` give every ``nn.Linear``
trunc-normal(std 0.02) weights and zero biases, so neither branch starts at
zero. Parameter names are those of the official class. The methods' own
papers' forms are :class:`HoulsbyAdapter` and :class:`AdaptFormer`.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import (Adapter, check_dropout, check_positive, check_scale,
                   register_adapter)


@register_adapter
class BottleneckAdapter(Adapter):
    """Args:
        in_dim: token width C.
        hidden_dim: bottleneck width (64 in both official baselines).
        scale: the branch's factor s (1: Adapter; 0.1: AdaptFormer).
        dropout: dropout after the GELU (0.1 in both).
    """

    def __init__(self,
                 in_dim: int,
                 hidden_dim: int = 64,
                 scale: float = 1.0,
                 dropout: float = 0.1):
        check_positive('in_dim', in_dim, 'BottleneckAdapter')
        check_positive('hidden_dim', hidden_dim, 'BottleneckAdapter')
        check_scale('scale', scale, 'BottleneckAdapter')
        check_dropout(dropout, 'BottleneckAdapter')
        super().__init__()
        self.scale = float(scale)
        self.project1 = nn.Linear(in_dim, hidden_dim)
        self.project2 = nn.Linear(hidden_dim, in_dim)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official backbones' Linear init: trunc-normal(0.02) weights
        (timm's cut at +-2, i.e. 100 standard deviations), zero biases."""
        for linear in (self.project1, self.project2):
            nn.init.trunc_normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)

    def delta(self,
              x: torch.Tensor,
              hw_shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Token-wise: ``hw_shape`` is unused, class tokens are fine."""
        h = self.dropout(F.gelu(self.project1(x)))
        return self.project2(h) * self.scale

    def extra_repr(self) -> str:
        return f'scale={self.scale}'
