"""RepAdapter (Luo et al., arXiv 2302.08106): a linear adapter that folds away.

``out = x + s * B(dropout(A(x)))`` with A dense C -> r and B grouped r -> C,
no activation. Being affine, ``x -> M x + c``, it merges into the linear layer
that follows it (see :func:`fold_affine_into_linear`), leaving zero inference
cost. Parameter names (``conv_A``, ``conv_B``, 1x1 ``Conv1d``) follow the
official code so official weights load unchanged.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .base import (Adapter, check_dropout, check_positive, check_scale,
                   register_adapter)


@register_adapter
class RepAdapter(Adapter):
    """Args:
        in_dim: token width C.
        hidden_dim: bottleneck width r (8 in the paper).
        groups: groups of the up-projection B (2 in the paper).
        scale: the scalar s (searched per task in the paper; 1 by default).
        dropout: dropout between A and B (0.1 in the paper).
    """

    def __init__(self,
                 in_dim: int,
                 hidden_dim: int = 8,
                 groups: int = 2,
                 scale: float = 1.0,
                 dropout: float = 0.1):
        for name, value in (('in_dim', in_dim), ('hidden_dim', hidden_dim),
                            ('groups', groups)):
            check_positive(name, value, 'RepAdapter')
        check_dropout(dropout, 'RepAdapter')
        check_scale('scale', scale, 'RepAdapter')
        super().__init__()
        if hidden_dim % groups or in_dim % groups:
            raise ValueError(
                f'RepAdapter groups={groups} must divide both hidden_dim='
                f'{hidden_dim} and in_dim={in_dim}; pick a divisor of both.')
        self.groups = groups
        self.scale = scale
        self.conv_A = nn.Conv1d(in_dim, hidden_dim, 1)
        self.conv_B = nn.Conv1d(hidden_dim, in_dim, 1, groups=groups)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: A xavier-uniform, zero bias; B zero (identity)."""
        nn.init.xavier_uniform_(self.conv_A.weight)
        nn.init.zeros_(self.conv_A.bias)
        nn.init.zeros_(self.conv_B.weight)
        nn.init.zeros_(self.conv_B.bias)

    def dense_up_weight(self) -> torch.Tensor:
        """B as a dense (C, r) matrix: block-diagonal over the groups."""
        weight = self.conv_B.weight.squeeze(-1)  # (C, r / groups)
        return torch.block_diag(*weight.chunk(self.groups, dim=0))

    def delta(self,
              x: torch.Tensor,
              hw_shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Token-wise, so ``hw_shape`` is unused and class tokens are fine."""
        h = F.linear(x, self.conv_A.weight.squeeze(-1), self.conv_A.bias)
        h = F.linear(self.dropout(h), self.dense_up_weight(), self.conv_B.bias)
        return self.scale * h

    @torch.no_grad()
    def as_affine(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(M, c) with ``adapter(x) == x @ M.T + c`` in eval mode."""
        up = self.dense_up_weight()
        down = self.conv_A.weight.squeeze(-1)
        eye = torch.eye(down.shape[1], dtype=down.dtype, device=down.device)
        matrix = eye + self.scale * up @ down
        offset = self.scale * (up @ self.conv_A.bias + self.conv_B.bias)
        return matrix, offset


@torch.no_grad()
def fold_affine_into_linear(weight: torch.Tensor, bias: torch.Tensor,
                            matrix: torch.Tensor,
                            offset: torch.Tensor) -> None:
    """In place: make ``y = W (M x + c) + b`` one linear layer, W <- W M and
    b <- W c + b. Computed in float64 so that merging adds no rounding error
    beyond the final cast, whatever the weights' dtype."""
    w, m, c = weight.double(), matrix.double(), offset.double()
    bias.copy_(bias.double() + w @ c)
    weight.copy_(w @ m)
