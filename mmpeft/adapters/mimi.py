"""MiMi adapter (Marouf et al., WACV 2024, arXiv 2311.03873).

A Houlsby-style bottleneck ``h + W_up act(W_down h)`` whose hidden neurons
are switched off by a persistent mask during training and physically removed
by :meth:`MiMiAdapter.shrink` for deployment.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import register_adapter


@register_adapter
class MiMiAdapter(nn.Module):

    def __init__(self, in_dim: int, hidden_dim: int):
        super().__init__()
        self.down = nn.Linear(in_dim, hidden_dim)
        self.up = nn.Linear(hidden_dim, in_dim)
        self.register_buffer('neuron_mask', torch.ones(hidden_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor,
                hw_shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        h = F.gelu(self.down(x)) * self.neuron_mask
        return x + self.up(h)
