"""AdaptFormer (Chen et al., NeurIPS 2022, arXiv 2205.13535): a scaled
bottleneck branch parallel to the FFN.

``delta(x) = s * up_proj(dropout(relu(down_proj(LN(x)))))``, added to the FFN
output; the host's ``parallel`` placement reads the sublayer input before the
norm and adds outside drop-path, as the official block does
(``adapt_x = self.adaptmlp(x, add_residual=False)``). Names and init follow
the official ``Adapter`` (ShoufaChen/AdaptFormer, ``models/adapter.py``):
``adapter_layer_norm_before`` (layernorm option ``'in'``; ``'none'`` has no
norm), ``down_proj``, ``up_proj``, ``scale``; the ``'lora'`` init is
kaiming-uniform (a = sqrt(5)) ``down_proj`` and zero ``up_proj`` and biases,
so the branch starts at zero. The official image runs use scale 0.1, no
norm, dropout 0.1, bottleneck 64: mmpeft's ``adaptformer_orig`` methods. The
Mona paper's AdaptFormer baseline is another form (GELU, both projections
trunc-normal(0.02)): :class:`~mmpeft.adapters.BottleneckAdapter` with scale
0.1 at the same placement.
"""
import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .base import (Adapter, check_dropout, check_positive, check_scale,
                   register_adapter)


@register_adapter
class AdaptFormer(Adapter):
    """Args:
        in_dim: token width C.
        hidden_dim: bottleneck width (the official ``ffn_num``, 64).
        scale: the official ``adapter_scalar``: a number (0.1 in the
            official runs) or ``'learnable_scalar'`` (a trained scalar
            starting at 1).
        layernorm: ``'none'`` (the official runs) or ``'in'`` (a LayerNorm
            on the branch input).
        dropout: dropout after the ReLU (0.1 in the official runs).
    """

    def __init__(self,
                 in_dim: int,
                 hidden_dim: int = 64,
                 scale: Union[float, str] = 0.1,
                 layernorm: str = 'none',
                 dropout: float = 0.1):
        check_positive('in_dim', in_dim, 'AdaptFormer')
        check_positive('hidden_dim', hidden_dim, 'AdaptFormer')
        check_dropout(dropout, 'AdaptFormer')
        super().__init__()
        if layernorm not in ('none', 'in'):
            raise ValueError(
                f"AdaptFormer: layernorm must be 'none' or 'in', got "
                f'{layernorm!r}; fix layernorm in adapter_cfg.')
        self.adapter_layer_norm_before = (nn.LayerNorm(in_dim)
                                          if layernorm == 'in' else None)
        if scale == 'learnable_scalar':
            self.scale = nn.Parameter(torch.ones(1))
        elif isinstance(scale, str):
            raise ValueError(
                "AdaptFormer: scale must be a number (the official runs use "
                f"0.1) or 'learnable_scalar', got {scale!r}; fix scale in "
                'adapter_cfg.')
        else:
            check_scale('scale', scale, 'AdaptFormer')
            self.scale = float(scale)
        self.down_proj = nn.Linear(in_dim, hidden_dim)
        self.up_proj = nn.Linear(hidden_dim, in_dim)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official ``'lora'`` init: the branch starts at zero."""
        nn.init.kaiming_uniform_(self.down_proj.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up_proj.weight)
        nn.init.zeros_(self.down_proj.bias)
        nn.init.zeros_(self.up_proj.bias)
        if self.adapter_layer_norm_before is not None:
            self.adapter_layer_norm_before.reset_parameters()
        if isinstance(self.scale, nn.Parameter):
            nn.init.ones_(self.scale)

    def delta(self,
              x: torch.Tensor,
              hw_shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Token-wise: ``hw_shape`` is unused, class tokens are fine."""
        if self.adapter_layer_norm_before is not None:
            x = self.adapter_layer_norm_before(x)
        h = self.dropout(F.relu(self.down_proj(x)))
        return self.up_proj(h) * self.scale
