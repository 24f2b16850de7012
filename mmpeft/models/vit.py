"""Adapters anywhere in mmseg's Vision Transformer.

:class:`AdapterVisionTransformer` takes adapters at the placements of
:mod:`mmpeft.models.placements` in every encoder layer; ``RepAdapterViT``
is its preset with a RepAdapter before the attention and before the FFN,
which merging folds into qkv / fc1. Everything else is the stock mmseg
``VisionTransformer``: its
arguments, position-embedding resizing, ``out_indices``, ``final_norm``,
``with_cls_token`` and ``with_cp``. ``convert_weights=True`` reads the official
timm / DeiT checkpoints directly (see :func:`convert_timm_vit`).
"""
import math
import re
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from mmengine.registry import MODELS
from mmengine.runner.checkpoint import CheckpointLoader, load_state_dict
from mmseg.models.backbones.vit import (TransformerEncoderLayer,
                                        VisionTransformer)
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..compat import packed_self_attention
from .block_selection import BlockVocabulary
from .peft_backbone import PEFTBackboneMixin, PretrainedMismatchError
from .placements import (PRESET_SLOT_NAMES, AdaptedBlock,
                         adapted_self_attention, has_weight_adapters,
                         same_adapter_at)

# timm block sub-keys -> mmseg TransformerEncoderLayer sub-keys.
_TIMM_BLOCK_KEYS = (
    ('norm1.', 'ln1.'),
    ('norm2.', 'ln2.'),
    ('attn.qkv.weight', 'attn.attn.in_proj_weight'),
    ('attn.qkv.bias', 'attn.attn.in_proj_bias'),
    ('attn.proj.', 'attn.attn.out_proj.'),
    ('mlp.fc1.', 'ffn.layers.0.0.'),
    ('mlp.fc2.', 'ffn.layers.1.'),
)
# Classifier-only parts of a timm / DeiT checkpoint.
_TIMM_CLASSIFIER_PREFIXES = ('head.', 'head_dist.', 'pre_logits.')
# How a layer computes its self-attention (AdapterVisionTransformer's
# `attention`): mmcv's own call, one packed in-projection with
# nn.MultiheadAttention's maths, or the fused scaled_dot_product_attention.
ATTENTION_KERNELS = ('stock', 'packed', 'sdpa')


def unwrap_checkpoint(checkpoint: Mapping) -> Mapping:
    """The weights of a checkpoint: timm stores them under ``state_dict``,
    DeiT under ``model``, a bare state dict is itself."""
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), Mapping):
            return checkpoint[key]
    return checkpoint


def convert_timm_vit(
    state_dict: Mapping[str,
                        torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """timm / DeiT ViT keys -> mmseg ``VisionTransformer`` keys.

    The mapping of mmseg's ``tools/model_converters/vit2mmseg.py``
    (``blocks.i`` -> ``layers.i``, ``norm`` -> ``ln1``, qkv -> the
    ``nn.MultiheadAttention`` in-projection, ...), minus the classifier head.
    Keys already in mmseg layout pass through unchanged, so converting twice
    is harmless.
    """
    converted = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith(_TIMM_CLASSIFIER_PREFIXES):
            continue
        block = re.match(r'blocks\.(\d+)\.(.*)', key)
        if block:
            index, rest = block.groups()
            for old, new in _TIMM_BLOCK_KEYS:
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
            key = f'layers.{index}.{rest}'
        elif key.startswith('norm.'):
            key = 'ln1.' + key[len('norm.'):]
        elif key.startswith('patch_embed.proj.'):
            key = 'patch_embed.projection.' + key[len('patch_embed.proj.'):]
        converted[key] = value
    return converted


class AdapterViTLayer(AdaptedBlock, TransformerEncoderLayer):
    """A stock mmseg encoder layer with adapter slots.

    ``hw_shape`` is the patch grid of the current input, set by the backbone
    for every forward (the stock layer is called as ``layer(x)``). Tokens
    include the class token when the backbone has one, so the layer suits
    token-wise adapters (RepAdapter, MiMi); spatial ones reject it.
    """
    hw_shape: Optional[Sequence[int]] = None
    attention = 'packed'  # one of ATTENTION_KERNELS, set by the backbone

    @classmethod
    def adapt(cls, layer: TransformerEncoderLayer) -> 'AdapterViTLayer':
        layer.__class__ = cls
        return layer

    def restore_stock(self) -> None:
        """Back to a plain ``TransformerEncoderLayer`` (all merged)."""
        del self.token_slots
        self.__dict__.pop('hw_shape', None)
        self.__dict__.pop('attention', None)
        self.__class__ = TransformerEncoderLayer

    def weight_owner(self, placement: str) -> Tuple[nn.Module, str, str]:
        if placement == 'qkv':  # the fused in-projection of nn.MultiheadAttention
            return self.attn.attn, 'in_proj_weight', 'in_proj_bias'
        linear = dict(proj=self.attn.attn.out_proj,
                      fc1=self.ffn.layers[0][0],
                      fc2=self.ffn.layers[1])[placement]
        return linear, 'weight', 'bias'

    def _attn_body(self, h: torch.Tensor) -> torch.Tensor:
        """The attention before its drop-path, by the ``attention`` kernel;
        weight adapters on its linears need mmpeft's own call (explicit
        maths unless the kernel is ``'sdpa'``)."""
        mha = self.attn.attn
        if self.attention == 'sdpa' or has_weight_adapters(mha):
            out = adapted_self_attention(mha, h,
                                         fused=self.attention == 'sdpa')
        elif self.attention == 'packed':
            out = packed_self_attention(self.attn, h)
        elif self.attn.batch_first:  # mmcv's call: three strided views
            out = mha(h.transpose(0, 1), h.transpose(0, 1),
                      h.transpose(0, 1))[0].transpose(0, 1)
        else:
            out = mha(h, h, h)[0]
        return self.attn.proj_drop(out)

    def _ffn_body(self, h: torch.Tensor) -> torch.Tensor:
        return self.ffn.gamma2(self.ffn.layers(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:

        def _inner_forward(x):
            x = self.adapted_sublayer('attn', x, self.hw_shape, self.norm1,
                                      self._attn_body, self.attn.dropout_layer)
            return self.adapted_sublayer('ffn', x, self.hw_shape, self.norm2,
                                         self._ffn_body,
                                         self.ffn.dropout_layer)

        # Non-reentrant: with frozen weights the layer input need not require
        # grad while the adapters inside do (the stock check skips those).
        if self.with_cp and torch.is_grad_enabled():
            return checkpoint(_inner_forward, x, use_reentrant=False)
        return _inner_forward(x)


@MODELS.register_module()
class AdapterVisionTransformer(PEFTBackboneMixin, VisionTransformer):
    """mmseg ``VisionTransformer`` with adapters at any placement of every
    layer, or of the layers ``adapter_blocks`` selects.

    Args:
        adapters: sublayer -> placement -> adapter config (or a list), e.g.
            ``dict(attn=dict(qkv=dict(type='LoRA', r=8)))``; see
            :mod:`mmpeft.models.placements`. ``attn.qkv`` is the fused
            in-projection of ``nn.MultiheadAttention``.
        adapter_cp: recompute each adapter in backward instead of keeping its
            activations (same gradients).
        convert_weights: the pretrained checkpoint is an official timm / DeiT
            release (``blocks.*`` keys); convert it on load. mmseg's stock ViT
            needs checkpoints already converted
            (``tools/convert_timm_vit.py``).
        adapter_blocks: which layers get the adapters: None (every layer) or
            ``dict(layers=[6, 7, 8, 9, 10, 11])`` (negative indices count
            from the end); see :mod:`mmpeft.models.block_selection`. No
            autograd graph is built before the first trainable layer.
        frozen_activations_dtype: ``'bfloat16'`` stores what the frozen
            backbone saves for backward in bfloat16 (approximate gradients,
            less memory); None (default) keeps fp32. See
            :mod:`mmpeft.models.frozen_saves`.
        attention: the self-attention kernel of every layer (same maths):
            ``'packed'`` (default) one in-projection GEMM, then
            ``nn.MultiheadAttention``'s explicit attention map, as the stock
            layer computes it; ``'sdpa'`` the fused
            ``F.scaled_dot_product_attention``, which keeps no attention map
            for backward (less memory, faster); ``'stock'`` mmcv's own call
            (three strided in-projections; slower with frozen weights on
            CPU). Merging away every adapter leaves stock layers.
        train_backbone: every backbone weight trains (full fine-tuning on
            this host, e.g. with ``attention='sdpa'`` and
            ``adapters=dict()``); by default only adapters train.
        **kwargs: the stock ``VisionTransformer`` arguments.
    """
    block_class = AdapterViTLayer
    block_vocabulary = BlockVocabulary(group=None, block='layers',
                                       block_noun='layer')

    def __init__(self,
                 adapters: Optional[dict] = None,
                 adapter_cp: bool = False,
                 convert_weights: bool = False,
                 adapter_blocks: Optional[dict] = None,
                 frozen_activations_dtype: Optional[str] = None,
                 attention: str = 'packed',
                 train_backbone: bool = False,
                 **kwargs):
        if attention not in ATTENTION_KERNELS:
            raise ValueError(
                f'{type(self).__name__}: attention must be one of '
                f'{list(ATTENTION_KERNELS)}, got {attention!r}.')
        super().__init__(**kwargs)
        self.convert_weights = convert_weights
        self.attention = attention
        self.setup_slots(adapters, adapter_cp, adapter_blocks,
                         frozen_activations_dtype)
        for layer in self.layers:  # every layer runs the one kernel
            if attention != 'stock' and not isinstance(layer,
                                                       AdapterViTLayer):
                AdapterViTLayer.adapt(layer).add_slots(
                    [], self.block_width(layer))
            if isinstance(layer, AdapterViTLayer):
                layer.attention = attention
        if train_backbone:
            self.requires_grad_(True)
        self._hw_shape_hook = self.patch_embed.register_forward_hook(
            self._share_hw_shape)

    def blocks(self):
        return iter(self.layers)

    def block_grid(self):
        return [list(self.layers)]

    def forward_units(self):
        return list(self.layers) + ([self.norm1] if self.final_norm else [])

    def block_width(self, layer: TransformerEncoderLayer) -> int:
        return self.pos_embed.shape[-1]

    def last_stage_prefixes(self):
        return (f'layers.{len(self.layers) - 1}.', 'ln1.')

    def merge_adapters(self) -> 'AdapterVisionTransformer':
        super().merge_adapters()
        if not any(isinstance(layer, AdapterViTLayer)
                   for layer in self.layers):
            self._hw_shape_hook.remove()
        return self

    def _share_hw_shape(self, module, inputs, outputs) -> None:
        """PatchEmbed returns (tokens, hw_shape): tell the slots the grid."""
        for layer in self.layers:
            if isinstance(layer, AdapterViTLayer):
                layer.hw_shape = outputs[1]

    def _load_pretrained(self) -> None:
        """Stock loading; of a converted state dict if ``convert_weights``."""
        if not (self.convert_weights and isinstance(self.init_cfg, dict)
                and self.init_cfg.get('type') == 'Pretrained'):
            super()._load_pretrained()
            return
        path = self.init_cfg['checkpoint']
        checkpoint = CheckpointLoader.load_checkpoint(
            path, logger='current', map_location='cpu')
        state_dict = convert_timm_vit(unwrap_checkpoint(checkpoint))
        if 'pos_embed' in state_dict:
            state_dict['pos_embed'] = self._fit_pos_embed(
                state_dict['pos_embed'], path)
        load_state_dict(self, state_dict, strict=False, logger='current')

    def _fit_pos_embed(self, pos_embed: torch.Tensor,
                       path: str) -> torch.Tensor:
        """Resize a (1, 1 + g*g, C) checkpoint table to this ``img_size``, as
        the stock loader does for converted checkpoints."""
        if pos_embed.shape == self.pos_embed.shape:
            return pos_embed
        patches = pos_embed.shape[1] - 1 if pos_embed.dim() == 3 else -1
        grid = math.isqrt(max(patches, 0))
        if grid * grid != patches:
            raise PretrainedMismatchError(
                f'{type(self).__name__}: pos_embed of {path!r} has shape '
                f'{tuple(pos_embed.shape)}; expected (1, 1 + g*g, C): one '
                'class token and a square patch grid. Distilled DeiT '
                'checkpoints (a second token) are not supported.')
        h, w = self.img_size
        return self.resize_pos_embed(
            pos_embed, (h // self.patch_size, w // self.patch_size),
            (grid, grid), self.interpolate_mode)

    def _check_frozen_weights_loaded(self, loaded: Dict[str, torch.Size],
                                     checkpoint: str) -> None:
        """The mixin's guard, plus the fix for usual ViT layout mistakes."""
        try:
            super()._check_frozen_weights_loaded(loaded, checkpoint)
        except PretrainedMismatchError as err:
            if any(key.startswith('blocks.') for key in loaded):
                hint = ('The checkpoint is in timm / DeiT layout (blocks.* '
                        'keys): set convert_weights=True in the backbone '
                        'config, or convert it once with '
                        'tools/convert_timm_vit.py.')
            elif any(key.startswith('backbone.') for key in loaded):
                hint = ('The checkpoint is a whole model (backbone.* keys); '
                        'the backbone needs a bare backbone state dict. Use '
                        "load_from for whole models, or strip 'backbone.'.")
            else:
                raise
            raise PretrainedMismatchError(f'{err}\n{hint}') from None


@MODELS.register_module()
class RepAdapterViT(AdapterVisionTransformer):
    """ViT with RepAdapters (Luo et al., arXiv 2302.08106) before the
    attention and the FFN of every layer; :meth:`merge_adapters` folds them
    into qkv / fc1 and leaves exactly a stock mmseg ``VisionTransformer``.

    Args:
        adapter_cfg: the adapter of every slot; the default is the paper's,
            ``hidden_dim=8``, ``groups=2``, ``scale=1.0`` (the scale s is
            searched per task in the paper; set it with
            ``adapter_cfg=dict(type='RepAdapter', scale=s)``).
        adapter_cp, convert_weights, adapter_blocks,
            frozen_activations_dtype, attention, **kwargs: see
            :class:`AdapterVisionTransformer`.
    """
    default_adapter_cfg = dict(type='RepAdapter',
                               hidden_dim=8,
                               groups=2,
                               scale=1.0)
    slot_names = PRESET_SLOT_NAMES

    def __init__(self, adapter_cfg: Optional[dict] = None, **kwargs):
        adapter_cfg = dict(adapter_cfg or self.default_adapter_cfg)
        super().__init__(adapters=same_adapter_at('pre', adapter_cfg),
                         **kwargs)
        self.adapter_cfg = adapter_cfg

    def deploy_backbone_cfg(self) -> dict:
        return dict(adapter_cfg=dict(self.slots[0].cfgs[0]),
                    **self.block_selection_cfg())
