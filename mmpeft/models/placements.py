"""Where adapters sit in a transformer block: one vocabulary for every host.

A block (mmdet Swin block, mmseg ViT layer) has two sublayers, ``attn`` and
``ffn``, each computing ``x + drop_path(body(norm(x)))``. An adapter ``A``
goes at one of five token placements of a sublayer, or on one of its linear
weights:

===============  ===============================================  ===========
placement        the sublayer becomes                             used by
===============  ===============================================  ===========
pre              ``x + drop_path(body(A(norm(x))))``              RepAdapter
series           ``x + drop_path(A(body(norm(x))))``              MiMi, Adapter
after_drop_path  ``x + A(drop_path(body(norm(x))))``              LoRand
parallel         ``x + drop_path(body(norm(x))) + A.delta(x)``    AdaptFormer
post             ``A(x + drop_path(body(norm(x))))``              Mona
qkv, proj        attention linears: ``W x + b + A(x)``            LoRA
fc1, fc2         FFN linears: ``W x + b + A(x)``                  LoRA
===============  ===============================================  ===========

``after_drop_path`` differs from ``series`` only in training with
drop-path: a dropped sample's sublayer output is zero, and ``A(0)`` (not 0)
is added, as the LoRand code of the Mona authors does
(``x = self.lorand1(x) + identity`` after the attention's own drop-path).

``parallel`` reads the sublayer input ``x`` (before the norm) and adds
outside drop-path, as the official AdaptFormer code does
(``adapt_x = self.adaptmlp(x, add_residual=False)``). A config says where:

    adapters=dict(attn=dict(post=dict(type='Mona')),
                  ffn=dict(post=dict(type='Mona'), fc1=dict(type='LoRA', r=4)))

A value may be a list of adapter configs: applied in order at pre / series /
post, summed at parallel and on weights. Merging follows from the maths
(:func:`merge_block`): weight updates add into their weight, an affine
adapter at ``pre`` folds into the first linear of its sublayer, every other
adapter simplifies itself (``Adapter.deploy``).
"""
from dataclasses import dataclass
from typing import (Callable, Dict, Iterator, List, Mapping, Optional,
                    Sequence, Tuple)

import torch
import torch.nn.functional as F
from torch import nn

from ..adapters import WeightAdapter, build_adapter, build_weight_adapter
from torch.utils.checkpoint import checkpoint

from .frozen_saves import adapter_scope

def call_adapter(adapter: Callable, x: torch.Tensor, hw_shape,
                 recompute: bool) -> torch.Tensor:
    """``adapter(x, hw_shape)``; with ``recompute`` (training only), keep just
    the adapter's input for backward and recompute its internals there.

    The input is kept by the host block anyway, so what the adapter would
    save (for Mona: norms, gamma products, conv maps, GELU input, dropout
    mask) costs no memory. Non-reentrant checkpointing replays the RNG
    state: dropout masks, and so the gradients, are those of the plain
    forward.
    """
    with adapter_scope():
        if recompute and torch.is_grad_enabled():
            return checkpoint(adapter, x, hw_shape, use_reentrant=False)
        return adapter(x, hw_shape)


SUBLAYERS = ('attn', 'ffn')
TOKEN_PLACEMENTS = ('pre', 'series', 'after_drop_path', 'parallel', 'post')
# The linears of a block, per sublayer, the first being the one a `pre`
# adapter feeds (where an affine one folds). A block type may offer others
# (AdaptedBlock.weight_placements): a SwiGLU FFN (DINOv2-g, EVA-02) has the
# fused gate-and-value linear w12 and the output linear w3 instead.
WEIGHT_PLACEMENTS = {'attn': ('qkv', 'proj'), 'ffn': ('fc1', 'fc2')}


@dataclass(frozen=True)
class Slot:
    """One placement of one sublayer and the adapter configs it holds."""
    sublayer: str
    placement: str
    cfgs: Tuple[dict, ...]
    name: str  # block attribute of a token slot

    @property
    def on_weight(self) -> bool:
        return self.placement not in TOKEN_PLACEMENTS


def parse_adapters(adapters: Mapping,
                   names: Optional[Mapping[str, str]] = None,
                   weight_placements: Optional[Mapping[str,
                                                       Sequence[str]]] = None
                   ) -> List[Slot]:
    """``adapters=dict(attn=dict(post=cfg), ...)`` -> slots, checked.

    ``names`` (sublayer -> attribute) overrides the block attribute of token
    slots (default ``<sublayer>_<placement>``, e.g. ``attn_post``); the
    method presets, one token slot per sublayer, keep their ``attn_adapter``
    / ``ffn_adapter`` checkpoint keys this way. An empty mapping is no slot:
    the stock backbone, frozen, for the methods that train parts of the
    backbone itself (Fixed, BitFit, NormTuning, Partial-1; their
    ``PEFTFreezeHook`` policy says which). ``weight_placements`` are the
    linears the host's blocks offer (default :data:`WEIGHT_PLACEMENTS`).
    """
    weight_placements = weight_placements or WEIGHT_PLACEMENTS
    if not isinstance(adapters, Mapping):
        raise ValueError(
            'adapters must map sublayers to placements to adapter configs, '
            "e.g. adapters=dict(attn=dict(post=dict(type='Mona')), "
            f"ffn=dict(post=dict(type='Mona'))); got {adapters!r}.")
    slots = []
    for sublayer, placements in adapters.items():
        if sublayer not in SUBLAYERS:
            raise ValueError(
                f'adapters has no sublayer {sublayer!r}: a block has '
                f'{list(SUBLAYERS)}.')
        known = TOKEN_PLACEMENTS + tuple(weight_placements[sublayer])
        for placement, cfgs in placements.items():
            if placement not in known:
                raise ValueError(
                    f'adapters.{sublayer} has no placement {placement!r}; the '
                    f'{sublayer} sublayer offers {list(known)} (token '
                    'placements pre / series / parallel / post, and its '
                    'linear weights).')
            cfgs = tuple(dict(c) for c in (
                cfgs if isinstance(cfgs, (list, tuple)) else [cfgs]))
            if not cfgs or any('type' not in c for c in cfgs):
                raise ValueError(
                    f'adapters.{sublayer}.{placement} needs adapter configs '
                    f"with a `type`, e.g. dict(type='Mona'); got {cfgs!r}.")
            name = (names or {}).get(sublayer, f'{sublayer}_{placement}')
            slots.append(Slot(sublayer, placement, cfgs, name))
    return slots


# The presets' block attributes: one token adapter per sublayer, named
# ``attn_adapter`` / ``ffn_adapter`` (their checkpoint keys).
PRESET_SLOT_NAMES = {'attn': 'attn_adapter', 'ffn': 'ffn_adapter'}


def same_adapter_at(placement: str, adapter_cfg: dict) -> dict:
    """``adapters`` with ``adapter_cfg`` at ``placement`` of both sublayers."""
    return {s: {placement: dict(adapter_cfg)} for s in SUBLAYERS}


def slots_to_cfg(slots: Sequence[Slot]) -> Dict[str, Dict[str, object]]:
    """The ``adapters`` mapping that :func:`parse_adapters` reads back."""
    cfg: Dict[str, Dict[str, object]] = {}
    for slot in slots:
        cfgs = [dict(c) for c in slot.cfgs]
        cfg.setdefault(slot.sublayer, {})[slot.placement] = (
            cfgs[0] if len(cfgs) == 1 else cfgs)
    return cfg


def _one_or_list(modules: List[nn.Module]) -> nn.Module:
    return modules[0] if len(modules) == 1 else nn.ModuleList(modules)


def each(module: Optional[nn.Module]) -> Iterator[nn.Module]:
    """The adapters a slot holds (one module or a ModuleList of them)."""
    if module is None:
        return
    yield from (module if isinstance(module, nn.ModuleList) else [module])


# --------------------------------------------------------------------------
# Weight placements: an update of one linear weight
# --------------------------------------------------------------------------
class AdaptedLinear(nn.Linear):
    """A stock ``nn.Linear`` (re-classed in place, same state-dict keys) that
    adds its ``weight_adapter`` output: ``W x + b + sum_i A_i(x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        with adapter_scope():
            for adapter in each(self.weight_adapter):
                out = out + adapter(x)
        return out


def attach_weight_adapters(module: nn.Module, weight_name: str,
                           cfgs: Sequence[dict]) -> None:
    """Give ``module.<weight_name>`` its adapters as
    ``module.<weight_name>_adapter``. A plain ``nn.Linear`` becomes an
    :class:`AdaptedLinear`; other owners (``nn.MultiheadAttention``'s fused
    ``in_proj_weight``) are read by their host's own forward."""
    out_features, in_features = getattr(module, weight_name).shape
    setattr(module, f'{weight_name}_adapter', _one_or_list([
        build_weight_adapter(cfg, in_features, out_features) for cfg in cfgs
    ]))
    if isinstance(module, nn.Linear) and weight_name == 'weight':
        module._stock_class = type(module)
        module.__class__ = AdaptedLinear


def weight_adapters(module: nn.Module, weight_name: str) -> List[WeightAdapter]:
    return list(each(getattr(module, f'{weight_name}_adapter', None)))


@torch.no_grad()
def merge_weight_adapters(module: nn.Module, weight_name: str) -> None:
    """``W <- W + sum_i delta_i`` and the adapters removed; a re-classed
    linear gets its stock class back."""
    weight = getattr(module, weight_name)
    for adapter in weight_adapters(module, weight_name):
        weight.add_(adapter.delta_weight().to(weight))
    if hasattr(module, f'{weight_name}_adapter'):
        delattr(module, f'{weight_name}_adapter')
    if isinstance(module, AdaptedLinear):
        module.__class__ = module._stock_class
        del module._stock_class


def adapted_self_attention(mha: nn.MultiheadAttention, x: torch.Tensor,
                           fused: bool = True) -> torch.Tensor:
    """``nn.MultiheadAttention`` self-attention on batch-first tokens with
    the weight adapters of its in-projection (``in_proj_weight_adapter``)
    and of ``out_proj`` applied: the stock maths, softmax(q k^T / sqrt(d)) v
    per head, with ``W x + b + A(x)`` as the projections.

    ``fused``: ``F.scaled_dot_product_attention`` (keeps no attention map
    for backward); else the explicit maths of ``nn.MultiheadAttention``
    (the map is computed and kept, as the stock ViT does)."""
    b, n, c = x.shape
    qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)
    with adapter_scope():
        for adapter in weight_adapters(mha, 'in_proj_weight'):
            qkv = qkv + adapter(x)
    heads = mha.num_heads
    q, k, v = qkv.view(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    dropout = mha.dropout if mha.training else 0.0
    if fused:
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    else:
        attn = torch.softmax((q * (c // heads)**-0.5) @ k.transpose(-2, -1),
                             dim=-1)
        out = F.dropout(attn, dropout, training=dropout > 0) @ v
    return mha.out_proj(out.transpose(1, 2).reshape(b, n, c))


def has_weight_adapters(module: nn.Module) -> bool:
    return any(isinstance(m, WeightAdapter) for m in module.modules())


# --------------------------------------------------------------------------
# Token placements, in the block
# --------------------------------------------------------------------------
class AdaptedBlock:
    """Mixed into a re-classed stock block: builds its slots, runs a
    sublayer with them, and merges them.

    The host block class says where its parts are: :meth:`weight_owner` (the
    module owning each linear weight) and its forward passes ``norm``,
    ``body`` and ``drop_path`` of each sublayer to :meth:`adapted_sublayer`.
    """
    adapter_cp = False  # recompute the adapters in backward (call_adapter)
    weight_placements = WEIGHT_PLACEMENTS  # the linears weight_owner knows

    @classmethod
    def adapt(cls, block: nn.Module) -> 'AdaptedBlock':
        """Re-class a built stock block in place (no copy of its weights)."""
        raise NotImplementedError

    def restore_stock(self) -> None:
        """Back to the stock block class once every adapter merged away."""
        raise NotImplementedError

    def weight_owner(self, placement: str) -> Tuple[nn.Module, str, str]:
        """``(module, weight attribute, bias attribute)`` of a linear."""
        raise NotImplementedError

    def add_slots(self, slots: Sequence[Slot], width: int) -> None:
        self.token_slots = {}  # sublayer -> placement -> block attribute
        for slot in slots:
            if slot.on_weight:
                module, weight, _ = self.weight_owner(slot.placement)
                attach_weight_adapters(module, weight, slot.cfgs)
                continue
            setattr(self, slot.name, _one_or_list(
                [build_adapter(cfg, width) for cfg in slot.cfgs]))
            self.token_slots.setdefault(slot.sublayer,
                                        {})[slot.placement] = slot.name

    def _slot(self, sublayer: str, placement: str) -> Optional[nn.Module]:
        name = self.token_slots.get(sublayer, {}).get(placement)
        return None if name is None else getattr(self, name)

    def call_adapter(self, fn: Callable, x: torch.Tensor,
                     hw_shape) -> torch.Tensor:
        """``fn(x, hw_shape)`` for an adapter of this block or its
        ``delta``; hosts whose tokens hold more than the H*W map override
        it."""
        return call_adapter(fn, x, hw_shape,
                            self.adapter_cp and not self.with_cp)

    def _chain(self, slot: Optional[nn.Module], x: torch.Tensor,
               hw_shape) -> torch.Tensor:
        for adapter in each(slot):
            x = self.call_adapter(adapter, x, hw_shape)
        return x

    def adapted_sublayer(self, sublayer: str, x: torch.Tensor, hw_shape,
                         norm: nn.Module,
                         body: Callable[[torch.Tensor], torch.Tensor],
                         drop_path: nn.Module) -> torch.Tensor:
        """``x + drop_path(body(norm(x)))`` with this sublayer's adapters at
        their placements (see the module docstring)."""
        out = body(self._chain(self._slot(sublayer, 'pre'), norm(x),
                               hw_shape))
        out = drop_path(
            self._chain(self._slot(sublayer, 'series'), out, hw_shape))
        y = x + self._chain(self._slot(sublayer, 'after_drop_path'), out,
                            hw_shape)
        for adapter in each(self._slot(sublayer, 'parallel')):
            y = y + self.call_adapter(adapter.delta, x, hw_shape)
        return self._chain(self._slot(sublayer, 'post'), y, hw_shape)

    def has_adapters(self) -> bool:
        return any(self.token_slots.values()) or has_weight_adapters(self)

    @torch.no_grad()
    def merge_slots(self) -> None:
        """Deploy form of this block's adapters (see the module docstring)."""
        for sublayer in SUBLAYERS:
            for placement in self.weight_placements[sublayer]:
                module, weight, _ = self.weight_owner(placement)
                merge_weight_adapters(module, weight)
            pre = list(each(self._slot(sublayer, 'pre')))
            affine = [adapter.as_affine() for adapter in pre]
            if pre and all(a is not None for a in affine):
                self._fold_pre(sublayer, affine)
            for placement in TOKEN_PLACEMENTS:
                for adapter in each(self._slot(sublayer, placement)):
                    adapter.deploy()

    def _fold_pre(self, sublayer: str,
                  affine: List[Tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Compose the affine ``pre`` adapters and fold them into the first
        linear of the sublayer: ``W <- W M``, ``b <- W c + b``."""
        from ..adapters.repadapter import fold_affine_into_linear
        matrix, offset = affine[0]
        for m, c in affine[1:]:
            matrix, offset = m @ matrix, m @ offset + c
        first = self.weight_placements[sublayer][0]
        module, weight, bias = self.weight_owner(first)
        if getattr(module, bias) is None:
            raise ValueError(
                f'Folding the {sublayer}.pre adapters needs a bias on '
                f'{first} to absorb their offset; build the '
                'backbone with qkv_bias=True (the stock setting), or keep the '
                'model unmerged.')
        fold_affine_into_linear(getattr(module, weight), getattr(module, bias),
                                matrix, offset)
        delattr(self, self.token_slots[sublayer].pop('pre'))


def merged_slots(slots: Sequence[Slot], block: AdaptedBlock) -> List[Slot]:
    """The slots of ``slots`` that ``block`` still holds after merging, with
    each adapter config updated to build its deploy form."""
    kept = []
    for slot in slots:
        if slot.on_weight or slot.placement not in block.token_slots.get(
                slot.sublayer, {}):
            continue
        adapters = list(each(getattr(block, slot.name)))
        cfgs = tuple(dict(cfg, **adapter.deploy_cfg())
                     for cfg, adapter in zip(slot.cfgs, adapters))
        kept.append(Slot(slot.sublayer, slot.placement, cfgs, slot.name))
    return kept

