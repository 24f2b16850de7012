"""LoRA (Hu et al., ICLR 2022, arXiv 2106.09685): a low-rank weight update.

``y = W x + b + (alpha / r) B A dropout(x)`` with A (r, in) and B (out, r);
B starts at zero, so the layer starts as the pretrained one. In eval mode the
update is the weight ``(alpha / r) B A``, which merging adds into ``W``.
Parameter names and init follow ``loralib`` (``lora_A`` kaiming-uniform with
a = sqrt(5), ``lora_B`` zero).
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .base import WeightAdapter, register_adapter


@register_adapter
class LoRA(WeightAdapter):
    """Args:
        in_features / out_features: the adapted linear layer's shape.
        r: rank of the update.
        alpha: the update is scaled by ``alpha / r`` (``alpha = r`` by
            default: scale 1).
        dropout: dropout on the input of the low-rank path.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 r: int = 8,
                 alpha: Optional[float] = None,
                 dropout: float = 0.0):
        super().__init__()
        if not (isinstance(r, int) and r >= 1):
            raise ValueError(f'LoRA: r must be an integer >= 1, got {r!r}.')
        self.r = r
        self.scaling = (r if alpha is None else alpha) / r
        self.lora_A = nn.Parameter(torch.empty(r, in_features))
        self.lora_B = nn.Parameter(torch.empty(out_features, r))
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(self.dropout(x), self.lora_A),
                        self.lora_B) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling

    def extra_repr(self) -> str:
        return f'r={self.r}, scaling={self.scaling}'
