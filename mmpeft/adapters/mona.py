"""Mona: multi-cognitive visual adapter (Yin et al., CVPR 2025, arXiv 2408.08345).

Parameter names follow the official code so official weights map one to one.
The conv branch ``(dw3 + dw5 + dw7) / 3 + id`` followed by ``m + projector(m)``
is linear, so it is computed as ONE 7x7 depthwise conv and ONE 1x1 conv whose
kernels are built from the parameters at every call (training included: the
gradients flow back through the padding into the 3/5/7 kernels). ``deploy()``
stores the fused kernels once and drops the branch parameters.
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .base import (Adapter, check_dropout, check_flag, check_positive,
                   check_token_map, register_adapter)

FusedKernels = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class MonaConv(nn.Module):
    """Official ``MonaOp``: mean of 3/5/7 depthwise convs plus identity, then
    a 1x1 projector plus identity. ``forward`` is the literal three-conv form."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.conv2 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv3 = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.projector = nn.Conv2d(dim, dim, 1)
        # Constant parts of the fused kernels, built once (not saved).
        centre = torch.zeros(dim, 1, 7, 7)
        centre[:, :, 3, 3] = 1.0
        self.register_buffer('_identity_7x7', centre, persistent=False)
        self.register_buffer('_identity_1x1', torch.eye(dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (self.conv1(x) + self.conv2(x) + self.conv3(x)) / 3.0 + x
        return x + self.projector(x)

    def fused_kernels(self) -> FusedKernels:
        """(dw weight (C,1,7,7), dw bias, 1x1 weight (C,C), 1x1 bias)."""
        dw_weight = (F.pad(self.conv1.weight, (2, 2, 2, 2)) +
                     F.pad(self.conv2.weight, (1, 1, 1, 1)) +
                     self.conv3.weight) / 3.0 + self._identity_7x7
        dw_bias = (self.conv1.bias + self.conv2.bias + self.conv3.bias) / 3.0
        pw_weight = self.projector.weight.flatten(1) + self._identity_1x1
        return dw_weight, dw_bias, pw_weight, self.projector.bias


class FusedMonaConv(nn.Module):
    """Deploy form of :class:`MonaConv`: the two fused kernels, stored."""

    def __init__(self, dim: int):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.pw = nn.Linear(dim, dim)

    def fused_kernels(self) -> FusedKernels:
        return self.dw.weight, self.dw.bias, self.pw.weight, self.pw.bias


def fused_mona_conv(tokens: torch.Tensor, hw_shape: Sequence[int],
                    kernels: FusedKernels) -> torch.Tensor:
    """Apply the fused conv branch to tokens (B, H*W, C) without leaving the
    channels-last layout (the depthwise conv reads an NHWC view)."""
    dw_weight, dw_bias, pw_weight, pw_bias = kernels
    b, n, c = tokens.shape
    fmap = tokens.view(b, *hw_shape, c).permute(0, 3, 1, 2)
    fmap = F.conv2d(fmap, dw_weight, dw_bias, padding=3, groups=c)
    return F.linear(fmap.permute(0, 2, 3, 1).reshape(b, n, c), pw_weight,
                    pw_bias)


@register_adapter
class Mona(Adapter):
    """Mona adapter: ``x + project2(drop(gelu(conv(project1(norm'(x))))))``.

    Args:
        in_dim: token width C.
        inner_dim: bottleneck width (64 in the paper).
        dropout: dropout before ``project2`` (0.1 in the paper).
        fused: compute the conv branch with the fused kernels (same maths,
            faster); False runs the literal three-conv form.
        deploy: build the stored-fused-kernel form (see :meth:`deploy`).
    """
    reads_token_map = True

    def __init__(self,
                 in_dim: int,
                 inner_dim: int = 64,
                 dropout: float = 0.1,
                 fused: bool = True,
                 deploy: bool = False):
        check_positive('in_dim', in_dim, 'Mona')
        check_positive('inner_dim', inner_dim, 'Mona')
        check_dropout(dropout, 'Mona')
        check_flag('fused', fused, 'Mona')
        check_flag('deploy', deploy, 'Mona')
        super().__init__()
        self.fused = fused or deploy
        self.norm = nn.LayerNorm(in_dim)
        self.gamma = nn.Parameter(torch.empty(in_dim))
        self.gammax = nn.Parameter(torch.empty(in_dim))
        self.project1 = nn.Linear(in_dim, inner_dim)
        self.adapter_conv = (FusedMonaConv(inner_dim)
                             if deploy else MonaConv(inner_dim))
        self.dropout = nn.Dropout(dropout)
        self.project2 = nn.Linear(inner_dim, in_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: trunc-normal(0.02) Linear weights, zero biases,
        gamma 1e-6, gammax 1, PyTorch defaults for the convs."""
        self.norm.reset_parameters()
        nn.init.constant_(self.gamma, 1e-6)
        nn.init.ones_(self.gammax)
        for linear in (self.project1, self.project2):
            nn.init.trunc_normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)
        for conv in self.adapter_conv.modules():
            if conv is not self.adapter_conv and hasattr(conv, 'reset_parameters'):
                conv.reset_parameters()

    def delta(self, x: torch.Tensor, hw_shape: Sequence[int]) -> torch.Tensor:
        check_token_map(x, hw_shape)
        h = self.project1(self.norm(x) * self.gamma + x * self.gammax)
        if self.fused:
            h = fused_mona_conv(h, hw_shape, self.adapter_conv.fused_kernels())
        else:
            b, n, c = h.shape
            h = self.adapter_conv(h.view(b, *hw_shape, c).permute(0, 3, 1, 2))
            h = h.permute(0, 2, 3, 1).reshape(b, n, c)
        return self.project2(self.dropout(F.gelu(h)))

    @torch.no_grad()
    def deploy(self) -> 'Mona':
        """Replace the conv branch by its stored fused kernels (same outputs)."""
        if isinstance(self.adapter_conv, FusedMonaConv):
            return self
        dw_weight, dw_bias, pw_weight, pw_bias = self.adapter_conv.fused_kernels()
        fused = FusedMonaConv(dw_bias.numel()).to(dw_weight)
        fused.dw.weight.copy_(dw_weight)
        fused.dw.bias.copy_(dw_bias)
        fused.pw.weight.copy_(pw_weight)
        fused.pw.bias.copy_(pw_bias)
        self.adapter_conv = fused
        self.fused = True
        return self

    def deploy_cfg(self) -> dict:
        return dict(deploy=True)
