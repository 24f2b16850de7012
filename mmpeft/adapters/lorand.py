"""LoRand (Yin et al., CVPR 2023, "1% VS 100%: Parameter-Efficient Low Rank
Adapter for Dense Predictions", by the Mona authors): a bottleneck adapter
whose projections are sums of low-rank products sharing a kernel.

``delta(x) = W_up gelu(W_down x + b_D) + b_U`` with, over ``num_branch``
branches i (alpha in the paper), kernel ``K_i`` (beta x beta, beta =
``kernel_dim``) shared by both projections of its branch:

    W_down^T = sum_i DP_i K_i DQ_i      (C, beta)(beta, beta)(beta, m)
    W_up^T   = sum_i UP_i K_i UQ_i      (m, beta)(beta, beta)(beta, C)

Provenance: no official code was found (the Mona repository has none). The
maths, parameter names (``param_dict.DP0`` ... ``UQ{i}``, ``bias_D``,
``bias_U``) and init (kaiming-uniform, a = sqrt(5), on every factor; biases
uniform in +-1/sqrt(fan_in) of their projection) follow the one public
PyTorch ``LoRand`` module found (a third-party port to SAM, which says it
follows code from the authors); the paper's description (multi-branch
low-rank projections with shared kernels, GELU) agrees. The init is NOT the
identity: a fresh LoRand changes the backbone's outputs. The paper's alpha,
beta and m values were not found either; the defaults here are our choice
(see the method table, mmpeft/methods.py).
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import Adapter, register_adapter


@register_adapter
class LoRand(Adapter):
    """Args:
        in_dim: token width C.
        hidden_dim: bottleneck width m.
        num_branch: branches alpha of each projection.
        kernel_dim: size beta of each branch's shared kernel.
    """

    def __init__(self,
                 in_dim: int,
                 hidden_dim: int = 64,
                 num_branch: int = 2,
                 kernel_dim: int = 8):
        super().__init__()
        self.num_branch = num_branch
        shapes = dict(DP=(in_dim, kernel_dim),
                      DQ=(kernel_dim, hidden_dim),
                      K=(kernel_dim, kernel_dim),
                      UP=(hidden_dim, kernel_dim),
                      UQ=(kernel_dim, in_dim))
        self.param_dict = nn.ParameterDict({
            f'{name}{i}':
            nn.Parameter(torch.empty(shape))
            for i in range(num_branch)
            for name, shape in shapes.items()
        })
        self.bias_D = nn.Parameter(torch.empty(hidden_dim))
        self.bias_U = nn.Parameter(torch.empty(in_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for param in self.param_dict.values():
            nn.init.kaiming_uniform_(param, a=math.sqrt(5))
        in_dim, hidden_dim = self.bias_U.numel(), self.bias_D.numel()
        nn.init.uniform_(self.bias_D, -1 / math.sqrt(in_dim),
                         1 / math.sqrt(in_dim))
        nn.init.uniform_(self.bias_U, -1 / math.sqrt(hidden_dim),
                         1 / math.sqrt(hidden_dim))

    def _branch_sum(self, first: str, last: str) -> torch.Tensor:
        p = self.param_dict
        return sum(p[f'{first}{i}'] @ p[f'K{i}'] @ p[f'{last}{i}']
                   for i in range(self.num_branch))

    def down_weight(self) -> torch.Tensor:
        """W_down as an (m, C) linear weight."""
        return self._branch_sum('DP', 'DQ').t()

    def up_weight(self) -> torch.Tensor:
        """W_up as a (C, m) linear weight."""
        return self._branch_sum('UP', 'UQ').t()

    def delta(self,
              x: torch.Tensor,
              hw_shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Token-wise: ``hw_shape`` is unused, class tokens are fine."""
        h = F.gelu(F.linear(x, self.down_weight(), self.bias_D))
        return F.linear(h, self.up_weight(), self.bias_U)
