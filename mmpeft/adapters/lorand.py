"""LoRand (Yin et al., CVPR 2023, "1% VS 100%: Parameter-Efficient Low Rank
Adapter for Dense Predictions", by the Mona authors): a bottleneck adapter
whose two projections are sums of low-rank branch products.

``delta(x) = project2(gelu(project1(x)))``, each projection a
:class:`LoRandLinear` ``F.linear(x, W, b)`` with, over ``num_branch``
branches i, its own kernel ``g_i`` (beta x beta, beta = ``kernel_dim``):

    W^T = sum_i A_i g_i B_i         (in, beta)(beta, beta)(beta, out)

``project1`` maps C to m = C / ``factor``, ``project2`` back. This is the
authors' own code, DongshuoYin/CoLin ``MMDetection/mmdet/models/backbones/
swin_lorand.py`` (classes ``Lorand_Multi`` and ``Lorand``), which the Mona
paper's LoRand baseline runs: factor 2 (m = C/2), 4 branches, 8x8 kernels,
a separate kernel per projection, no dropout, in every Swin block as
``x = x + lorand(drop_path(attn(norm1(x))))`` and likewise for the FFN (the
``after_drop_path`` placement). Names (``project1.param_dict.A0``,
``g0``, ``B0``, ..., ``project1.bias``) and init are that code's:
kaiming-uniform (a = sqrt(5)) on every factor, biases uniform in
+-1/sqrt(in) of their projection. The init is NOT the identity: a fresh
LoRand changes the backbone's outputs.
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import Adapter, check_positive, register_adapter


class LoRandLinear(nn.Module):
    """A linear layer ``in_features -> out_features`` whose weight is
    ``(sum_i A_i g_i B_i)^T`` (the official ``Lorand_Multi``)."""

    def __init__(self, in_features: int, out_features: int, num_branch: int,
                 kernel_dim: int):
        super().__init__()
        self.num_branch = num_branch
        shapes = dict(A=(in_features, kernel_dim),
                      g=(kernel_dim, kernel_dim),
                      B=(kernel_dim, out_features))
        self.param_dict = nn.ParameterDict({
            f'{name}{i}': nn.Parameter(torch.empty(shape))
            for i in range(num_branch) for name, shape in shapes.items()
        })
        self.bias = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for param in self.param_dict.values():
            nn.init.kaiming_uniform_(param, a=math.sqrt(5))
        bound = 1 / math.sqrt(self.param_dict['A0'].shape[0])
        nn.init.uniform_(self.bias, -bound, bound)

    def weight(self) -> torch.Tensor:
        """The (out, in) weight, summed over the branches."""
        p = self.param_dict
        return sum(p[f'A{i}'] @ p[f'g{i}'] @ p[f'B{i}']
                   for i in range(self.num_branch)).t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)


@register_adapter
class LoRand(Adapter):
    """Args:
        in_dim: token width C.
        factor: the bottleneck is m = C // factor wide (2 in the official
            run).
        num_branch: branches of each projection (4).
        kernel_dim: size beta of each branch's kernel (8).
    """

    def __init__(self,
                 in_dim: int,
                 factor: int = 2,
                 num_branch: int = 4,
                 kernel_dim: int = 8):
        for name, value in (('in_dim', in_dim), ('factor', factor),
                            ('num_branch', num_branch),
                            ('kernel_dim', kernel_dim)):
            check_positive(name, value, 'LoRand')
        if in_dim < factor:
            raise ValueError(
                f'LoRand: factor={factor} leaves no bottleneck for tokens of '
                f'width {in_dim} (m = in_dim // factor = 0); pick a factor '
                f'<= {in_dim} in adapter_cfg.')
        super().__init__()
        hidden_dim = in_dim // factor
        self.project1 = LoRandLinear(in_dim, hidden_dim, num_branch,
                                     kernel_dim)
        self.project2 = LoRandLinear(hidden_dim, in_dim, num_branch,
                                     kernel_dim)

    def reset_parameters(self) -> None:
        self.project1.reset_parameters()
        self.project2.reset_parameters()

    def delta(self,
              x: torch.Tensor,
              hw_shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Token-wise: ``hw_shape`` is unused, class tokens are fine."""
        return self.project2(F.gelu(self.project1(x)))
