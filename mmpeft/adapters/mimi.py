"""MiMi adapter (Marouf et al., "Mini but Mighty", WACV 2024, arXiv 2311.03873).

A Houlsby-style bottleneck ``x + W_up gelu(W_down x)`` whose hidden neurons
are switched off by a persistent mask during training (shapes never change
while training, so optimizers, DDP and resuming are unaffected) and
physically removed by :meth:`MiMiAdapter.shrink` for deployment.

Choices taken from the official code (IemProg/MiMi, ``models/swin_adapters.py``,
class ``ParallelMlp`` in series mode): GELU between the two projections, no
biases (``mlp_bias=False``), both projections ``trunc_normal(std=0.02)`` (the
model-wide ``_init_weights``), no dropout. ``bias=True`` is offered for
Houlsby-style adapters with biases; biases are not part of the score.
"""
from typing import Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .base import Adapter, check_flag, check_positive, register_adapter


@register_adapter
class MiMiAdapter(Adapter):
    """``x + up(gelu(down(x)) * neuron_mask)``.

    Args:
        in_dim: token width C.
        hidden_dim: number of hidden neurons. 0 builds an identity with no
            parameters (a deploy adapter that pruning emptied).
        bias: give both projections a bias (the official adapter has none).

    Invariant kept by :meth:`set_mask`: a masked neuron's weights (its row
    of ``down``, its ``down`` bias, its column of ``up``) are zero, so it gets
    exactly zero gradient and weight decay cannot move it. When every neuron
    is masked the ``up`` bias is gated off too: the adapter is the identity,
    exactly what :meth:`shrink` turns it into.
    """

    def __init__(self, in_dim: int, hidden_dim: int, bias: bool = False):
        check_positive('in_dim', in_dim, 'MiMiAdapter')
        # 0: every neuron pruned (a shrunk deploy adapter is the identity).
        check_positive('hidden_dim', hidden_dim, 'MiMiAdapter',
                       allow_zero=True)
        check_flag('bias', bias, 'MiMiAdapter')
        super().__init__()
        self.in_dim = in_dim
        self.use_bias = bias
        self.register_buffer('neuron_mask', torch.ones(hidden_dim))
        if hidden_dim:
            self.down = nn.Linear(in_dim, hidden_dim, bias=bias)
            self.up = nn.Linear(hidden_dim, in_dim, bias=bias)
        else:
            self.down = self.up = None
        self.reset_parameters()

    @property
    def hidden_dim(self) -> int:
        """Neurons the tensors hold (masked ones included)."""
        return self.neuron_mask.numel()

    @property
    def width(self) -> int:
        """Neurons alive: what :meth:`shrink` keeps."""
        return int(self.neuron_mask.count_nonzero())

    def reset_parameters(self) -> None:
        """Official init; masked neurons stay zero."""
        if self.down is None:
            return
        for linear in (self.down, self.up):
            nn.init.trunc_normal_(linear.weight, std=0.02)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
        self.set_mask(self.neuron_mask)

    def forward(self, x: torch.Tensor,
                hw_shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        return x if self.down is None else x + self.delta(x, hw_shape)

    def delta(self, x: torch.Tensor,
              hw_shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        if self.down is None:
            return torch.zeros_like(x)
        hidden = F.gelu(self.down(x)) * self.neuron_mask
        up_bias = self.up.bias
        if up_bias is not None:  # off once the adapter has no neuron left
            up_bias = up_bias * self.neuron_mask.amax()
        return F.linear(hidden, self.up.weight, up_bias)

    def neuron_axes(self) -> Iterator[Tuple[nn.Parameter, int]]:
        """Each parameter indexed by hidden neuron, with the axis of that
        index. Also used to clear per-parameter optimizer state."""
        if self.down is None:
            return
        yield self.down.weight, 0
        if self.down.bias is not None:
            yield self.down.bias, 0
        yield self.up.weight, 1

    def importance(self) -> torch.Tensor:
        """Score of each neuron (masked ones included; they score 0):
        ``(||W_down[i, :]||_1 + ||W_up[:, i]||_1) / (2 * in_dim)``.

        The denominator is the number of weights tied to neuron i (a row of
        ``down`` and a column of ``up``, ``in_dim`` each), which makes scores
        of adapters of different widths comparable (MiMi's normalisation).
        """
        if self.down is None:
            return self.neuron_mask.new_zeros(0)
        with torch.no_grad():
            # One reduction over [row of down | column of up], as the official
            # code sums them, so equal weights give bit-equal scores.
            tied = torch.cat([self.down.weight, self.up.weight.t()], 1)
            return tied.float().abs().sum(1) / tied.shape[1]

    @torch.no_grad()
    def set_mask(self, mask: torch.Tensor) -> None:
        """Switch neurons off (0) or keep them (1), zeroing the weights of the
        masked ones. Neurons cannot be switched back on: their weights are
        gone."""
        if mask.shape != self.neuron_mask.shape:
            raise ValueError(
                f'set_mask got a mask of shape {tuple(mask.shape)} for an '
                f'adapter with {self.hidden_dim} neurons.')
        self.neuron_mask.copy_((mask != 0).to(self.neuron_mask.dtype))
        dead = (self.neuron_mask == 0).nonzero().flatten()
        for param, axis in self.neuron_axes():
            param.index_fill_(axis, dead, 0.0)

    def num_active_params(self) -> int:
        """Parameters left after :meth:`shrink`."""
        width = self.width
        if width == 0:
            return 0
        biases = width + self.in_dim if self.use_bias else 0
        return 2 * self.in_dim * width + biases

    @torch.no_grad()
    def shrink(self) -> 'MiMiAdapter':
        """Drop masked neurons from the tensors (same outputs); an adapter
        left without neurons becomes an identity with no parameters."""
        keep = self.neuron_mask.nonzero().flatten()
        if keep.numel() == self.hidden_dim:
            return self
        if keep.numel() == 0:
            self.down = self.up = None
        else:
            self.down = _take(self.down, keep, axis=0, bias_too=True)
            self.up = _take(self.up, keep, axis=1, bias_too=False)
        self.neuron_mask = self.neuron_mask.new_ones(keep.numel())
        return self

    def deploy(self) -> 'MiMiAdapter':
        return self.shrink()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A width mismatch would otherwise be a mere warning under mmengine's
        # non-strict loading, leaving random adapters behind.
        saved = state_dict.get(f'{prefix}neuron_mask')
        if saved is not None and saved.shape != self.neuron_mask.shape:
            raise RuntimeError(
                f'MiMi adapter {prefix.rstrip(".")!r}: the checkpoint has '
                f'{saved.numel()} hidden neurons, the model {self.hidden_dim}. '
                'A checkpoint with shrunk adapters (deploy) needs a model '
                'built with their widths: set MiMiSwin(adapter_widths=...) '
                "as `MiMiSwin.deploy_backbone_cfg()` gives (the widths are "
                "also in the training checkpoint's meta['mimi']).")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f'in_dim={self.in_dim}, hidden_dim={self.hidden_dim}, '
                f'width={self.width}, bias={self.use_bias}')


def _take(linear: nn.Linear, index: torch.Tensor, axis: int,
          bias_too: bool) -> nn.Linear:
    """A copy of ``linear`` keeping ``index`` along ``axis`` of its weight
    (and of its bias when ``bias_too``)."""
    weight = linear.weight.index_select(axis, index)
    out_features, in_features = weight.shape
    new = nn.Linear(in_features, out_features, bias=linear.bias is not None,
                    device=weight.device, dtype=weight.dtype)
    new.weight.copy_(weight)
    if linear.bias is not None:
        new.bias.copy_(linear.bias.index_select(0, index)
                       if bias_too else linear.bias)
    new.requires_grad_(linear.weight.requires_grad)
    return new
