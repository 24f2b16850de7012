"""Adapter slots in mmseg's Vision Transformer, and RepAdapter merging.

Each encoder layer calls ``attn_adapter`` on ``ln1(x)`` right before the
attention and ``ffn_adapter`` on ``ln2(x)`` right before the FFN — the
RepAdapter placement, where an affine adapter folds into the qkv / fc1 weights
that follow it. Everything else is the stock mmseg ``VisionTransformer``.
"""
from typing import Optional, Sequence

import torch
from mmengine.registry import MODELS
from mmseg.models.backbones.vit import (TransformerEncoderLayer,
                                        VisionTransformer)
from torch.utils.checkpoint import checkpoint

from ..adapters.repadapter import RepAdapter, fold_affine_into_linear
from .peft_backbone import PEFTBackboneMixin


class AdapterViTLayer(TransformerEncoderLayer):
    """A stock mmseg encoder layer with two pre-projection adapter slots.

    ``hw_shape`` is the patch grid of the current input, set by the backbone
    for every forward (the stock layer is called as ``layer(x)``). Tokens
    include the class token when the backbone has one, so the layer suits
    token-wise adapters (RepAdapter, MiMi); spatial ones reject it.
    """
    hw_shape: Optional[Sequence[int]] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:

        def _inner_forward(x):
            x = self.attn(self.attn_adapter(self.norm1(x), self.hw_shape),
                          identity=x)
            return self.ffn(self.ffn_adapter(self.norm2(x), self.hw_shape),
                            identity=x)

        if self.with_cp and torch.is_grad_enabled():
            return checkpoint(_inner_forward, x, use_reentrant=False)
        return _inner_forward(x)


class AdapterVisionTransformer(PEFTBackboneMixin, VisionTransformer):
    """mmseg ``VisionTransformer`` with an adapter in every layer slot.

    Args:
        adapter_cfg: the adapter for every slot, e.g. ``dict(type='RepAdapter')``.
        **kwargs: the stock ``VisionTransformer`` arguments.
    """
    default_adapter_cfg: Optional[dict] = None

    def __init__(self, adapter_cfg: Optional[dict] = None, **kwargs):
        super().__init__(**kwargs)
        self.adapter_cfg = dict(adapter_cfg or self.default_adapter_cfg)
        width = self.pos_embed.shape[-1]
        for layer in self.layers:
            layer.__class__ = AdapterViTLayer  # see AdapterSwinBlock
            layer.attn_adapter = self.build_slot_adapter(width)
            layer.ffn_adapter = self.build_slot_adapter(width)
        self.patch_embed.register_forward_hook(self._share_hw_shape)
        self.freeze_pretrained()

    def _share_hw_shape(self, module, inputs, outputs) -> None:
        """PatchEmbed returns (tokens, hw_shape): hand the grid to the slots."""
        for layer in self.layers:
            if isinstance(layer, AdapterViTLayer):
                layer.hw_shape = outputs[1]


@MODELS.register_module()
class RepAdapterViT(AdapterVisionTransformer):
    """ViT with RepAdapters (Luo et al., arXiv 2302.08106) before the
    attention and the FFN of every layer; :meth:`merge_adapters` folds them
    into qkv / fc1 and leaves exactly a stock mmseg ``VisionTransformer``."""
    default_adapter_cfg = dict(type='RepAdapter', hidden_dim=8, groups=2,
                               scale=1.0)

    @torch.no_grad()
    def merge_adapters(self) -> 'RepAdapterViT':
        """Fold every adapter into the next linear layer and remove it.

        The result has the stock state-dict keys and shapes: a merged
        checkpoint loads strictly into mmseg's ``VisionTransformer``."""
        for layer in self.layers:
            if not isinstance(layer, AdapterViTLayer):
                continue
            qkv = layer.attn.attn
            fc1 = layer.ffn.layers[0][0]
            for adapter, (weight, bias) in (
                    (layer.attn_adapter, (qkv.in_proj_weight, qkv.in_proj_bias)),
                    (layer.ffn_adapter, (fc1.weight, fc1.bias))):
                if not isinstance(adapter, RepAdapter):
                    raise TypeError(
                        f'Only RepAdapter folds into the next linear layer; '
                        f'got {type(adapter).__name__}.')
                if bias is None:
                    raise ValueError(
                        'Merging needs a bias on qkv and fc1 (qkv_bias=True, '
                        'the stock setting) to absorb the adapter offset.')
                fold_affine_into_linear(weight, bias, *adapter.as_affine())
            del layer.attn_adapter, layer.ffn_adapter
            layer.__class__ = TransformerEncoderLayer
        return self
