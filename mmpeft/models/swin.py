"""Adapter slots in mmdet's Swin Transformer: one Swin for every method.

Each block calls ``attn_adapter`` after the attention residual and
``ffn_adapter`` after the FFN residual, with the stage's unpadded (H, W) — the
placement of Mona and MiMi. Everything else is the stock mmdet
``SwinTransformer``: its arguments, ``convert_weights`` for the official
checkpoints, ``out_indices``, ``frozen_stages``, drop-path and ``with_cp``.
"""
from typing import Optional, Sequence, Set

import torch
from mmdet.models.backbones.swin import SwinBlock, SwinTransformer
from mmengine.registry import MODELS
from torch.utils.checkpoint import checkpoint

from ..adapters import check_token_map
from .peft_backbone import (PEFTBackboneMixin, PretrainedMismatchError,
                            call_adapter)


class AdapterSwinBlock(SwinBlock):
    """A stock ``SwinBlock`` with two adapter slots.

    mmdet builds ``SwinBlock`` instances directly inside ``SwinBlockSequence``
    with no class argument, so :class:`AdapterSwinTransformer` re-classes the
    built blocks to this subclass (it adds no state of its own, only the
    forward) instead of copying the whole Swin.
    """
    adapter_cp = False  # recompute the adapters in backward (see call_adapter)

    def forward(self, x: torch.Tensor, hw_shape: Sequence[int]) -> torch.Tensor:
        check_token_map(x, hw_shape)  # the stock check is a bare assert
        # A checkpointed block recomputes its adapters anyway.
        recompute = self.adapter_cp and not self.with_cp

        def _inner_forward(x):
            x = self.attn(self.norm1(x), hw_shape) + x
            x = call_adapter(self.attn_adapter, x, hw_shape, recompute)
            x = self.ffn(self.norm2(x), identity=x)
            return call_adapter(self.ffn_adapter, x, hw_shape, recompute)

        # Non-reentrant: with frozen weights the block input need not require
        # grad while the adapters inside do (the stock check skips those).
        if self.with_cp and torch.is_grad_enabled():
            return checkpoint(_inner_forward, x, use_reentrant=False)
        return _inner_forward(x)


class AdapterSwinTransformer(PEFTBackboneMixin, SwinTransformer):
    """mmdet ``SwinTransformer`` with an adapter in every block slot.

    Args:
        adapter_cfg: the adapter for every slot, e.g. ``dict(type='Mona')``;
            built by :func:`mmpeft.adapters.build_adapter` with the block width.
        adapter_cp: recompute each adapter in backward instead of keeping its
            activations (same gradients; for Mona about a third less training
            memory for about 10% more step time on CPU). Blocks with ``with_cp``
            recompute everything already.
        **kwargs: the stock ``SwinTransformer`` arguments.
    """
    default_adapter_cfg: Optional[dict] = None

    def __init__(self,
                 adapter_cfg: Optional[dict] = None,
                 adapter_cp: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.adapter_cfg = dict(adapter_cfg or self.default_adapter_cfg)
        for stage in self.stages:
            for block in stage.blocks:
                width = block.norm1.normalized_shape[0]
                block.__class__ = AdapterSwinBlock
                block.adapter_cp = adapter_cp
                block.attn_adapter = self.build_slot_adapter(width)
                block.ffn_adapter = self.build_slot_adapter(width)
        self.freeze_pretrained()

    def _load_pretrained(self) -> None:
        try:
            super()._load_pretrained()
        except IndexError as err:  # mmdet indexes the first 'backbone.' key
            raise PretrainedMismatchError(
                f'{type(self).__name__}: no key of the pretrained checkpoint '
                f'{self._pretrained_path()!r} starts with "backbone.". mmdet '
                'keeps only such keys. For an official Microsoft Swin release '
                'set convert_weights=True; for a bare backbone state dict, '
                'prefix its keys with "backbone.".') from err
        except RuntimeError as err:
            # mmdet loads with torch's load_state_dict(strict=False), which
            # still raises on wrong shapes; its message names every key.
            if 'size mismatch' not in str(err):
                raise
            raise PretrainedMismatchError(
                f'{type(self).__name__}: the pretrained checkpoint '
                f'{self._pretrained_path()!r} has weights of the wrong shape '
                f'for this architecture.\n{err}\nFix: use a checkpoint of '
                'this architecture (embed_dims, depths, num_heads, patch '
                'size).'
            ) from err

    def _weights_not_in_pretrained(self) -> Set[str]:
        """The output norms ``norm{i}``: the official ImageNet releases have
        one final ``norm`` instead. As in the official Mona code they keep
        the LayerNorm init (identity affine) and stay frozen."""
        return {
            f'norm{i}.{name}'
            for i in self.out_indices
            for name, _ in getattr(self, f'norm{i}').named_parameters()
        }


@MODELS.register_module()
class MonaSwinTransformer(AdapterSwinTransformer):
    """Swin with Mona adapters (Yin et al., CVPR 2025): the official placement
    and freezing, one 64-wide Mona after each residual of every block."""
    default_adapter_cfg = dict(type='Mona', inner_dim=64)
