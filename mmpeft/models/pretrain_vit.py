"""Adapters in mmpretrain's transformers: DINOv2 / DeiT / EVA ViTs, EVA-02
and SAM's image encoder.

Three hosts, each the stock mmpretrain 1.2.0 backbone (every argument,
``out_indices`` / ``out_type``, position-table resizing on load, the same
checkpoint keys) whose encoder layers take adapters at the placements of
:mod:`mmpeft.models.placements`; ``convert_weights=True`` reads the official
release directly (:mod:`mmpeft.models.pretrain_convert`):

- :class:`AdapterPretrainViT`: ``VisionTransformer``, every arch (``base``
  with ``patch_size=14, layer_scale_init_value=1e-5`` is DINOv2-B,
  ``dinov2-g`` adds ``layer_cfgs=dict(ffn_type='swiglu_fused')``), plus
  DINOv2's register tokens (``num_register_tokens``);
- :class:`AdapterViTEVA02`: ``ViTEVA02`` (SwiGLU, RoPE);
- :class:`AdapterViTSAM`: ``ViTSAM`` (windowed and global attention).

A block type is described by where its parts sit (``DescribedBlock``); each
sublayer is ``x + branch(body(norm(x)))``:

=========================  ==========  ==============================  ======================
block (mmpretrain)         norms       bodies                          branch
=========================  ==========  ==============================  ======================
ViT ``TransformerEncoder-  ln1, ln2    attn: qkv, SDPA, proj;          layer scale
Layer``                                ffn: fc1, act, fc2 or SwiGLU    (``gamma1``/``gamma2``),
                                       (w12, silu-gate, w3)            then drop-path
``EVA02EndcoderLayer``     norm1,      attn: qkv, RoPE on q / k,       drop-path
                           norm2       proj; mlp: SwiGLU (w12, w3)
SAM ``TransformerEncoder-  ln1, ln2    attn: (windowed) attention on   attn: none;
Layer``                                the (H, W) map; ffn: fc1, fc2   ffn: drop-path
=========================  ==========  ==============================  ======================

Layer scale belongs to the branch: ``series`` sits inside it,
``x + drop_path(gamma * A(body(norm(x))))``, as the official series adapters
(Houlsby's adapter-bert, MiMi's ``swin_adapters.py``) sit on the sublayer
output inside the branch's stochastic depth: the adapter rewrites what the
sublayer computes, sees its unscaled output (what its init assumes), and the
pretrained per-channel scale still applies to the result. ``parallel`` adds
outside the branch, drop-path and layer scale, as the official AdaptFormer
code adds ``adapt_x`` after the residual add (its own scale ``s`` plays that
role); ``post`` follows the residual add (Mona); ``pre`` sits between the
norm and the body.

Tokens: the class token and DINOv2's register tokens come before the H*W
patch tokens. Token-wise adapters see every token; an adapter that reads
the token map (``Adapter.reads_token_map``: Mona's convolutions) gets only
the patch tokens, and the extra tokens pass through it unchanged (its delta
is zero there). SAM's layers hold a (B, H, W, C) map: adapters see it
flattened to (B, H*W, C), the whole map, never windows.
"""
from typing import (Callable, Dict, Iterator, List, Mapping, Optional,
                    Tuple)

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from mmengine.runner.checkpoint import CheckpointLoader, load_state_dict
from mmpretrain.models.backbones import vision_transformer as vit
from mmpretrain.models.backbones import vit_sam
from mmpretrain.models.backbones.vit_eva02 import (EVA02EndcoderLayer,
                                                   ViTEVA02)
from mmpretrain.models.utils import SwiGLUFFN
from torch import nn

from .block_selection import BlockVocabulary
from .peft_backbone import PEFTBackboneMixin, PretrainedMismatchError
from .placements import SUBLAYERS, AdaptedBlock
from .pretrain_convert import (ConversionError, convert_dinov2, convert_eva02,
                               convert_sam)

Sublayer = Tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor],
                 Callable[[torch.Tensor], torch.Tensor]]


def _unchanged(x: torch.Tensor) -> torch.Tensor:
    return x


class DescribedBlock(AdaptedBlock):
    """A stock block with adapter slots, run from a description of its
    parts: :meth:`block_weights` (where each linear weight is) and
    :meth:`sublayer` (the norm, body and branch of a sublayer)."""
    stock_class: type = nn.Module
    with_cp = False  # mmpretrain's layers have no activation checkpointing

    @staticmethod
    def block_weights(block: nn.Module) -> Dict[str, Dict[str, str]]:
        """sublayer -> placement -> module path of the linear, for a built
        (stock or adapted) block of this type."""
        raise NotImplementedError

    def sublayer(self, name: str, hw_shape) -> Sublayer:
        raise NotImplementedError

    @classmethod
    def adapt(cls, block: nn.Module) -> 'DescribedBlock':
        block.__class__ = cls
        return block

    def restore_stock(self) -> None:
        del self.token_slots
        self.__class__ = self.stock_class

    @property
    def weight_placements(self) -> Dict[str, Tuple[str, ...]]:
        return {s: tuple(w) for s, w in self.block_weights(self).items()}

    def weight_owner(self, placement: str) -> Tuple[nn.Module, str, str]:
        for weights in self.block_weights(self).values():
            if placement in weights:
                return self.get_submodule(weights[placement]), 'weight', 'bias'
        raise ValueError(
            f'This {self.stock_class.__name__} has no {placement!r} weight; '
            f'it offers {self.weight_placements} (a SwiGLU FFN has w12 / w3 '
            'where an MLP has fc1 / fc2).')

    def forward_tokens(self, x: torch.Tensor, hw_shape) -> torch.Tensor:
        for name in SUBLAYERS:
            norm, body, branch = self.sublayer(name, hw_shape)
            x = self.adapted_sublayer(name, x, hw_shape, norm, body, branch)
        return x

    def call_adapter(self, fn: Callable, x: torch.Tensor,
                     hw_shape) -> torch.Tensor:
        """An adapter that reads the token map gets the H*W patch tokens
        only; the extra tokens in front pass it unchanged."""
        adapter = getattr(fn, '__self__', fn)
        extra = x.shape[1] - hw_shape[0] * hw_shape[1]
        if extra == 0 or not getattr(adapter, 'reads_token_map', False):
            return super().call_adapter(fn, x, hw_shape)
        head = x[:, :extra]
        out = super().call_adapter(fn, x[:, extra:], hw_shape)
        if fn is not adapter:  # its delta (parallel): zero on extra tokens
            head = torch.zeros_like(head)
        return torch.cat([head, out], dim=1)


def _ffn_branch(ffn: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The residual branch of mmcv's ``FFN`` and mmpretrain's SwiGLU FFNs:
    layer scale ``gamma2``, then ``dropout_layer`` (drop-path)."""
    return lambda out: ffn.dropout_layer(ffn.gamma2(out))


class AdapterPretrainViTLayer(DescribedBlock, vit.TransformerEncoderLayer):
    """mmpretrain ``VisionTransformer``'s layer (DeiT, DINOv2, EVA) with
    adapter slots; ``hw_shape`` is the current patch grid, set by the
    backbone (the stock layer is called as ``layer(x)``)."""
    stock_class = vit.TransformerEncoderLayer
    hw_shape: Optional[Tuple[int, int]] = None

    @staticmethod
    def block_weights(block):
        ffn = (dict(w12='ffn.w12', w3='ffn.w3') if isinstance(
            block.ffn, SwiGLUFFN) else dict(fc1='ffn.layers.0.0',
                                            fc2='ffn.layers.1'))
        return dict(attn=dict(qkv='attn.qkv', proj='attn.proj'), ffn=ffn)

    @classmethod
    def adapt(cls, block):
        if block.attn.v_shortcut:
            raise ValueError('Adapters need the attention output without '
                             'v_shortcut (used by T2T-ViT tokens only).')
        return super().adapt(block)

    def restore_stock(self) -> None:
        self.__dict__.pop('hw_shape', None)
        super().restore_stock()

    def _attn_body(self, h: torch.Tensor) -> torch.Tensor:
        """``MultiheadAttention.forward`` up to its layer scale."""
        attn = self.attn
        b, n, _ = h.shape
        q, k, v = attn.qkv(h).reshape(b, n, 3, attn.num_heads,
                                      attn.head_dims).permute(2, 0, 3, 1, 4)
        out = attn.scaled_dot_product_attention(
            q, k, v, dropout_p=attn.attn_drop if self.training else 0.)
        out = out.transpose(1, 2).reshape(b, n, attn.embed_dims)
        return attn.proj_drop(attn.proj(out))

    def _swiglu_body(self, h: torch.Tensor) -> torch.Tensor:
        """``SwiGLUFFN.forward`` up to its layer scale."""
        ffn = self.ffn
        gate, value = ffn.w12(h).chunk(2, dim=-1)
        return ffn.w3(ffn.norm(F.silu(gate) * value))

    def sublayer(self, name, hw_shape):
        if name == 'attn':
            attn = self.attn
            return (self.ln1, self._attn_body,
                    lambda out: attn.out_drop(attn.gamma1(out)))
        body = (self._swiglu_body if isinstance(self.ffn, SwiGLUFFN) else
                self.ffn.layers)
        return self.ln2, body, _ffn_branch(self.ffn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(x, self.hw_shape)


class AdapterEVA02Layer(DescribedBlock, EVA02EndcoderLayer):
    """mmpretrain's ``EVA02EndcoderLayer`` with adapter slots (no layer
    scale; one drop-path for both branches)."""
    stock_class = EVA02EndcoderLayer

    @staticmethod
    def block_weights(block):
        return dict(attn=dict(qkv='attn.qkv', proj='attn.proj'),
                    ffn=dict(w12='mlp.w12', w3='mlp.w3'))

    def sublayer(self, name, hw_shape):
        if name == 'attn':
            return (self.norm1, lambda h: self.attn(h, hw_shape),
                    self.drop_path)
        return self.norm2, self.mlp, self.drop_path

    def forward(self, x: torch.Tensor, patch_resolution) -> torch.Tensor:
        return self.forward_tokens(x, patch_resolution)


class AdapterSAMLayer(DescribedBlock, vit_sam.TransformerEncoderLayer):
    """SAM's encoder layer (mmpretrain ``ViTSAM``) with adapter slots: the
    (B, H, W, C) map runs as (B, H*W, C) tokens; attention partitions its
    input into windows itself (``window_size > 0``) or attends globally."""
    stock_class = vit_sam.TransformerEncoderLayer

    @staticmethod
    def block_weights(block):
        return dict(attn=dict(qkv='attn.qkv', proj='attn.proj'),
                    ffn=dict(fc1='ffn.layers.0.0', fc2='ffn.layers.1'))

    def _attn_body(self, h: torch.Tensor, hw_shape) -> torch.Tensor:
        b, n, c = h.shape
        x = h.view(b, *hw_shape, c)
        if self.window_size > 0:
            x, pad_hw = vit_sam.window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = vit_sam.window_unpartition(x, self.window_size, pad_hw,
                                           hw_shape)
        return x.reshape(b, n, c)

    def sublayer(self, name, hw_shape):
        if name == 'attn':  # SAM adds the attention without drop-path
            return (self.ln1, lambda h: self._attn_body(h, hw_shape),
                    _unchanged)
        return self.ln2, self.ffn.layers, _ffn_branch(self.ffn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        out = self.forward_tokens(x.reshape(b, h * w, c), (h, w))
        return out.reshape(b, h, w, c)


class PretrainHostMixin(PEFTBackboneMixin):
    """What the three mmpretrain hosts share: the arguments ``adapters``,
    ``adapter_cp`` and ``convert_weights`` (the official release read on
    load) before the stock ones, the layers in ``layers``, and Partial-1's
    last stage (the last layer with what normalises its output)."""
    converter: Callable[[Mapping], Mapping] = None
    official_release = ''

    block_vocabulary = BlockVocabulary(group=None, block='layers',
                                       block_noun='layer')
    # What the dense outputs pass after the last layer, where present.
    output_modules = ('ln1', 'ln2', 'channel_reduction')

    def __init__(self,
                 adapters: Optional[dict] = None,
                 adapter_cp: bool = False,
                 convert_weights: bool = False,
                 adapter_blocks: Optional[dict] = None,
                 frozen_activations_dtype: Optional[str] = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.convert_weights = convert_weights
        self.setup_slots(adapters, adapter_cp, adapter_blocks,
                         frozen_activations_dtype)

    def blocks(self) -> Iterator[nn.Module]:
        return iter(self.layers)

    def block_grid(self) -> List[List[nn.Module]]:
        return [list(self.layers)]

    def _output_modules(self) -> List[str]:
        return [n for n in self.output_modules
                if isinstance(getattr(self, n, None), nn.Module)
                and any(True for _ in getattr(self, n).parameters())]

    def forward_units(self) -> List[nn.Module]:
        return list(self.layers) + [getattr(self, n)
                                    for n in self._output_modules()]

    def block_width(self, block: nn.Module) -> int:
        return self.embed_dims

    def weight_placements(self) -> Dict[str, Tuple[str, ...]]:
        """The linears of its layers (a SwiGLU FFN's w12 / w3 or an MLP's
        fc1 / fc2), per sublayer."""
        found: Dict[str, Dict[str, None]] = {}
        for block in self.blocks():
            for sublayer, weights in self.block_class.block_weights(
                    block).items():
                found.setdefault(sublayer, {}).update(dict.fromkeys(weights))
        return {s: tuple(w) for s, w in found.items()}

    def last_stage_prefixes(self) -> Tuple[str, ...]:
        """The last layer and the modules after it that the dense outputs
        pass (final norms, SAM's channel reduction)."""
        return (f'layers.{len(self.layers) - 1}.',
                *(f'{n}.' for n in self._output_modules()))

    def _load_pretrained(self) -> None:
        """Stock loading; of the converted official file with
        ``convert_weights`` (the stock load hooks still resize the position
        tables to this grid)."""
        cfg = self.init_cfg
        if not (self.convert_weights and isinstance(cfg, dict)
                and cfg.get('type') == 'Pretrained'):
            super()._load_pretrained()
            return
        path = cfg['checkpoint']
        checkpoint = CheckpointLoader.load_checkpoint(
            path, logger='current', map_location='cpu')
        try:
            state_dict = type(self).converter(checkpoint)
        except ConversionError as err:
            raise PretrainedMismatchError(
                f'{type(self).__name__} (convert_weights=True): {path!r}: '
                f'{err}') from None
        load_state_dict(self, state_dict, strict=False, logger='current')

    def _check_frozen_weights_loaded(self, loaded, checkpoint) -> None:
        """The mixin's guard, plus the fix for an official file loaded
        without conversion."""
        try:
            super()._check_frozen_weights_loaded(loaded, checkpoint)
        except PretrainedMismatchError as err:
            if not any(k.startswith(('blocks.', 'image_encoder.'))
                       for k in loaded):
                raise
            raise PretrainedMismatchError(
                f'{err}\nThe checkpoint is an official {self.official_release}'
                ' release (blocks.* keys): set convert_weights=True in the '
                'backbone config, or convert it once with '
                'tools/convert_pretrain_vit.py.') from None


@MODELS.register_module()
class AdapterPretrainViT(PretrainHostMixin, vit.VisionTransformer):
    """mmpretrain ``VisionTransformer`` (every arch: DeiT, DINOv2, EVA-g,
    ...) with adapters at any placement of every layer.

    Args:
        adapters: sublayer -> placement -> adapter config (or a list), see
            :mod:`mmpeft.models.placements`; a SwiGLU FFN (``ffn_type=
            'swiglu_fused'``, DINOv2-g) offers the weights ``w12`` / ``w3``
            instead of ``fc1`` / ``fc2``.
        adapter_cp: recompute each adapter in backward (same gradients).
        adapter_blocks: which layers get the adapters, e.g.
            ``dict(layers=[10, 11])`` (default all); no graph is built
            before the first trainable layer (README "Which blocks").
        frozen_activations_dtype: ``'bfloat16'`` keeps what the frozen
            weights save for backward at that precision (less memory).
        convert_weights: the pretrained checkpoint is an official DINOv2
            (or timm / DeiT) release; convert it on load.
        num_register_tokens: DINOv2's register tokens (``_reg4`` releases:
            4), inserted after the class token once the position table is
            added, as the official code does; dense outputs leave them out.
            With registers the deploy file loads into this class (with
            ``adapters=dict()``), not into the stock backbone, which has
            none.
        **kwargs: the stock ``VisionTransformer`` arguments.
    """
    block_class = AdapterPretrainViTLayer
    converter = staticmethod(convert_dinov2)
    official_release = 'DINOv2 / timm'

    def __init__(self, num_register_tokens: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.num_register_tokens = num_register_tokens
        if num_register_tokens:  # pretrained weights: frozen as the others
            self.register_tokens = nn.Parameter(
                torch.zeros(1, num_register_tokens, self.embed_dims),
                requires_grad=False)
            self.drop_after_pos.register_forward_hook(self._add_registers)
        self.patch_embed.register_forward_hook(self._share_hw_shape)

    def _share_hw_shape(self, module, inputs, outputs) -> None:
        """PatchEmbed returns (tokens, hw_shape): tell the layers the grid."""
        for layer in self.layers:
            if isinstance(layer, AdapterPretrainViTLayer):
                layer.hw_shape = outputs[1]

    def _add_registers(self, module, inputs, x: torch.Tensor) -> torch.Tensor:
        """Registers after the class token, after the position table."""
        registers = self.register_tokens.expand(x.shape[0], -1, -1)
        extra = self.num_extra_tokens
        return torch.cat([x[:, :extra], registers, x[:, extra:]], dim=1)

    def _format_output(self, x: torch.Tensor, hw) -> torch.Tensor:
        if self.num_register_tokens and self.out_type != 'raw':
            extra = self.num_extra_tokens
            x = torch.cat(
                [x[:, :extra], x[:, extra + self.num_register_tokens:]], 1)
        return super()._format_output(x, hw)


@MODELS.register_module()
class AdapterViTEVA02(PretrainHostMixin, ViTEVA02):
    """mmpretrain ``ViTEVA02`` (SwiGLU FFN with weights ``w12`` / ``w3``,
    RoPE) with adapters at any placement of every layer.

    Args:
        adapters, adapter_cp, adapter_blocks, frozen_activations_dtype: see
            :class:`AdapterPretrainViT`.
        convert_weights: the pretrained checkpoint is an official EVA-02
            release (``EVA-02/asuka``); convert it on load.
        **kwargs: the stock ``ViTEVA02`` arguments.
    """
    block_class = AdapterEVA02Layer
    converter = staticmethod(convert_eva02)
    official_release = 'EVA-02'


@MODELS.register_module()
class AdapterViTSAM(PretrainHostMixin, vit_sam.ViTSAM):
    """mmpretrain ``ViTSAM`` (SAM's image encoder: windowed and global
    attention with relative positions) with adapters at any placement of
    every layer.

    Args:
        adapters, adapter_cp, adapter_blocks, frozen_activations_dtype: see
            :class:`AdapterPretrainViT`.
        convert_weights: the pretrained checkpoint is an official SAM
            release (``sam_vit_*.pth``, image encoder part); convert it on
            load.
        **kwargs: the stock ``ViTSAM`` arguments.
    """
    block_class = AdapterSAMLayer
    converter = staticmethod(convert_sam)
    official_release = 'SAM'
