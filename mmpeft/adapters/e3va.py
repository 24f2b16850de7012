"""E3VA (Yin et al., ACM MM 2023, arXiv 2306.09729, "Parameter-efficient is
not sufficient: Exploring Parameter, Memory, and Time Efficient Adapter
Tuning for Dense Predictions"): low-rank adapters on a gradient highway
beside the frozen backbone.

The backbone runs without an autograd graph. In every block, one adapter
reads the attention output and one the MLP output (each sublayer's output
before drop-path and the residual add); their outputs add into the
highway's own token state ``h``, which goes from block to block; where the
host changes resolution (Swin's patch merging) ``h`` goes through the
backbone's own merging layer; at every output the highway joins the feature
the neck reads through a trainable LayerNorm::

    h    <- h + A_attn(a_l) + A_ffn(f_l)    every block l (h starts at 0)
    h    <- merge_s(h)                      after stage s (frozen, shared)
    F_i  =  stock_i + LN_i(h_i)             at every output i

    A(x) =  U_2 U_1 gelu(D_2 D_1 x + b_D) + b_U   (dual low-rank adapter)
    D_1: C -> k,  D_2: k -> m,  U_1: m -> k,  U_2: k -> C

Gradients reach each adapter through additions and the merging layers only:
nothing back-propagates through a block, and the backbone keeps no
activation for backward (only the adapters' inputs, which they need for
their weight gradients).

Sources, and what the paper leaves open. No official code was found; of
the paper, its abstract and (through a public summary) the caption of its
Fig. 2 and its list of contributions were read here, not the equations of
its method section:

* Highway parallel to the blocks, fed by the W-MSA / SW-MSA and MLP outputs;
  downsampling layers inherited from the backbone; joined to the FPN with a
  trainable norm: the Fig. 2 caption.
* Parallel adapters on the highway rather than stacked ones, to shorten the
  backward path: the contributions. Read here as: each adapter reads the
  backbone's activation (not the highway state) and adds into the state.
* "Dual low-rank" adapter: the contributions name the structure. Read here
  as a bottleneck (width m) whose two projections are each a product of
  two rank-k factors; m = 64 (the inner width the same authors use for Mona
  and the Mona paper's adapter baselines), k = 8 (the kernel size mmpeft
  uses for their LoRand) and GELU (as their adapters) are our choices.
* Init: every factor as ``nn.Linear`` (kaiming-uniform, a = sqrt(5), biases
  uniform in +-1/sqrt(fan_in)), as the public LoRand port initialises every
  low-rank factor; the join's LayerNorm starts with scale 0 and bias 0, so a
  fresh E3VA model computes exactly the frozen backbone's features and the
  highway enters gradually. The paper gives no init.
* The join adds the normalised highway state to the stock feature (the
  backbone's own output, norm included); the paper's figure shows the
  highway entering the FPN through a trainable norm, not the exact sum.
"""
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .base import (Adapter, SideNetwork, build_adapter, check_positive,
                   register_adapter)

SUBLAYERS = ('attn', 'ffn')
# The highway's adapter unless a config names another (m = 64, k = 8).
E3VA_ADAPTER_CFG = dict(type='E3VAAdapter', hidden_dim=64, rank=8)


@register_adapter
class E3VAAdapter(Adapter):
    """The dual low-rank bottleneck ``delta(x) = U_2 U_1 gelu(D_2 D_1 x +
    b_D) + b_U``, token-wise (``hw_shape`` unused, class tokens fine).

    Args:
        in_dim: token width C.
        hidden_dim: bottleneck width m.
        rank: rank k of each projection's two factors.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 64, rank: int = 8):
        super().__init__()
        for name, value in (('in_dim', in_dim), ('hidden_dim', hidden_dim),
                            ('rank', rank)):
            check_positive(name, value, 'E3VAAdapter')
        self.down1 = nn.Linear(in_dim, rank, bias=False)
        self.down2 = nn.Linear(rank, hidden_dim)
        self.up1 = nn.Linear(hidden_dim, rank, bias=False)
        self.up2 = nn.Linear(rank, in_dim)

    def reset_parameters(self) -> None:
        for linear in (self.down1, self.down2, self.up1, self.up2):
            linear.reset_parameters()

    def delta(self,
              x: torch.Tensor,
              hw_shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        h = F.gelu(self.down2(self.down1(x)))
        return self.up2(self.up1(h))


class E3VAHighway(SideNetwork):
    """The highway's parameters: two adapters per block, one LayerNorm per
    output. :class:`HighwayRun` carries its state through one forward.

    Args:
        block_widths: the token width of every block, in forward order.
        output_widths: the width of every backbone output, in order.
        adapter_cfg: the adapter of every slot; any token-wise adapter
            (its ``delta`` is used, without ``hw_shape``). Default:
            :data:`E3VA_ADAPTER_CFG`.
    """

    def __init__(self,
                 block_widths: Sequence[int],
                 output_widths: Sequence[int],
                 adapter_cfg: Optional[dict] = None):
        super().__init__()
        adapter_cfg = adapter_cfg or E3VA_ADAPTER_CFG
        self.blocks = nn.ModuleList(
            nn.ModuleDict({
                sublayer: build_adapter(adapter_cfg, width)
                for sublayer in SUBLAYERS
            }) for width in block_widths)
        self.norms = nn.ModuleList(nn.LayerNorm(w) for w in output_widths)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for block in self.blocks:
            for adapter in block.values():
                adapter.reset_parameters()
        for norm in self.norms:
            nn.init.zeros_(norm.weight)
            nn.init.zeros_(norm.bias)

    def join(self, features: Sequence[torch.Tensor],
             states: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """``stock_i + LN_i(h_i)`` for every output: ``features`` (B, C, H,
        W) as the backbone returns them, ``states`` (B, N, C) whose last
        H*W tokens are the map (a leading class token is dropped)."""
        if len(features) != len(states) or len(states) != len(self.norms):
            raise RuntimeError(
                f'E3VA highway: {len(features)} backbone outputs, '
                f'{len(states)} highway states and {len(self.norms)} join '
                'norms; the host must take one highway state per output.')
        joined = []
        for feature, state, norm in zip(features, states, self.norms):
            b, c, h, w = feature.shape
            tokens = norm(state[:, state.shape[1] - h * w:])
            joined.append(feature + tokens.transpose(1, 2).reshape(b, c, h, w))
        return joined


class HighwayRun:
    """The highway's token state during one backbone forward, driven by the
    host in forward order: :meth:`absorb` each block's two sublayer outputs,
    :meth:`keep` the state at each output, :meth:`transform` it where the
    backbone changes resolution.

    Args:
        highway: the parameters.
        grad: build the highway's graph (the caller's grad mode; the
            backbone itself runs under ``torch.no_grad``).
        recompute: recompute each adapter in backward, keeping only its
            input (which the weight gradient needs anyway).
    """

    def __init__(self, highway: E3VAHighway, grad: bool,
                 recompute: bool = False):
        self.highway = highway
        self.grad = grad
        self.recompute = recompute and grad
        self.state: Optional[torch.Tensor] = None
        self.outputs: List[torch.Tensor] = []

    def absorb(self, block: int, sublayer: str,
               activation: torch.Tensor) -> None:
        """``h <- h + A(activation)`` with block ``block``'s ``sublayer``
        adapter."""
        adapter = self.highway.blocks[block][sublayer]
        with torch.set_grad_enabled(self.grad):
            if self.recompute:
                delta = checkpoint(adapter.delta, activation,
                                   use_reentrant=False)
            else:
                delta = adapter.delta(activation)
            self.state = delta if self.state is None else self.state + delta

    def keep(self) -> None:
        """The current state is the highway's part of the next output."""
        self.outputs.append(self.state)

    def transform(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """``h <- fn(h)`` (a frozen downsampling layer of the backbone)."""
        with torch.set_grad_enabled(self.grad):
            self.state = fn(self.state)
