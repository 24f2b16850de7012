"""Houlsby adapter (Houlsby et al., ICML 2019, arXiv 1902.00751): the
bottleneck ``x + W2 gelu(W1 x + b1) + b2`` with a near-identity start.

Houlsby's paper and MiMi put it on the output of each sublayer, before the
residual add (the ``series`` placement); mmpeft's ``adapter_orig`` methods
run it there. The Mona paper's "Adapter" baseline (arXiv 2408.08345) is the
same bottleneck in another form (exact GELU, dropout, std 0.02):
:class:`~mmpeft.adapters.BottleneckAdapter`. Parameter names, layout ((in, out) matrices) and init follow the
official ``feedforward_adapter`` of google-research/adapter-bert:
``weights1`` / ``weights2`` truncated-normal with stddev ``init_scale`` =
1e-3 (cut at two standard deviations, as TensorFlow's initializer),
``biases1`` / ``biases2`` zero, GELU in its tanh form.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import Adapter, check_positive, check_scale, register_adapter


@register_adapter
class HoulsbyAdapter(Adapter):
    """Args:
        in_dim: token width C.
        hidden_dim: bottleneck width m (64: the official default).
        init_scale: stddev of the weights' truncated-normal init (1e-3).
    """

    def __init__(self,
                 in_dim: int,
                 hidden_dim: int = 64,
                 init_scale: float = 1e-3):
        check_positive('in_dim', in_dim, 'HoulsbyAdapter')
        check_positive('hidden_dim', hidden_dim, 'HoulsbyAdapter')
        check_scale('init_scale', init_scale, 'HoulsbyAdapter')
        super().__init__()
        self.init_scale = init_scale
        self.weights1 = nn.Parameter(torch.empty(in_dim, hidden_dim))
        self.biases1 = nn.Parameter(torch.empty(hidden_dim))
        self.weights2 = nn.Parameter(torch.empty(hidden_dim, in_dim))
        self.biases2 = nn.Parameter(torch.empty(in_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for weight in (self.weights1, self.weights2):
            nn.init.trunc_normal_(weight,
                                  std=self.init_scale,
                                  a=-2 * self.init_scale,
                                  b=2 * self.init_scale)
        nn.init.zeros_(self.biases1)
        nn.init.zeros_(self.biases2)

    def delta(self,
              x: torch.Tensor,
              hw_shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Token-wise: ``hw_shape`` is unused, class tokens are fine."""
        h = F.gelu(x @ self.weights1 + self.biases1, approximate='tanh')
        return h @ self.weights2 + self.biases2
