"""Adapters anywhere in mmdet's Swin Transformer: one Swin for every method.

:class:`AdapterSwinTransformer` is the stock mmdet ``SwinTransformer`` (every
argument, ``convert_weights`` for the official checkpoints, ``out_indices``,
``frozen_stages``, drop-path, ``with_cp``) whose blocks take adapters at the
placements of :mod:`mmpeft.models.placements`; the method backbones are
presets of it. Adapters get the stage's unpadded (H, W): they see the whole
un-shifted token map, never windows.
"""
from typing import Optional, Sequence, Set, Tuple

import torch
from mmdet.models.backbones.swin import SwinBlock, SwinTransformer
from mmengine.registry import MODELS
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..adapters import check_token_map
from .block_selection import BlockVocabulary
from .peft_backbone import PEFTBackboneMixin, PretrainedMismatchError
from .placements import PRESET_SLOT_NAMES, AdaptedBlock, same_adapter_at


class AdapterSwinBlock(AdaptedBlock, SwinBlock):
    """A stock ``SwinBlock`` with adapter slots.

    mmdet builds ``SwinBlock`` instances inside ``SwinBlockSequence`` with no
    class argument, so :class:`AdapterSwinTransformer` re-classes the built
    blocks instead of copying the Swin. The attention's drop-path
    (``ShiftWindowMSA.drop``, no state) moves to ``attn_drop_path`` so that
    a series adapter can sit between the attention and its drop-path.
    """

    @classmethod
    def adapt(cls, block: SwinBlock) -> 'AdapterSwinBlock':
        block.__class__ = cls
        block.attn_drop_path = block.attn.drop
        block.attn.drop = nn.Identity()
        return block

    def restore_stock(self) -> None:
        """Back to a plain ``SwinBlock`` (after every adapter merged)."""
        self.attn.drop = self.attn_drop_path
        del self.attn_drop_path, self.token_slots
        self.__class__ = SwinBlock

    def weight_owner(self, placement: str) -> Tuple[nn.Module, str, str]:
        linear = dict(qkv=self.attn.w_msa.qkv,
                      proj=self.attn.w_msa.proj,
                      fc1=self.ffn.layers[0][0],
                      fc2=self.ffn.layers[1])[placement]
        return linear, 'weight', 'bias'

    def _ffn_body(self, h: torch.Tensor) -> torch.Tensor:
        return self.ffn.gamma2(self.ffn.layers(h))

    def forward(self, x: torch.Tensor, hw_shape: Sequence[int]) -> torch.Tensor:
        check_token_map(x, hw_shape)  # the stock check is a bare assert

        def _inner_forward(x):
            x = self.adapted_sublayer('attn', x, hw_shape, self.norm1,
                                      lambda h: self.attn(h, hw_shape),
                                      self.attn_drop_path)
            return self.adapted_sublayer('ffn', x, hw_shape, self.norm2,
                                         self._ffn_body,
                                         self.ffn.dropout_layer)

        # Non-reentrant: with frozen weights the block input need not require
        # grad while the adapters inside do (the stock check skips those).
        if self.with_cp and torch.is_grad_enabled():
            return checkpoint(_inner_forward, x, use_reentrant=False)
        return _inner_forward(x)


@MODELS.register_module()
class AdapterSwinTransformer(PEFTBackboneMixin, SwinTransformer):
    """mmdet ``SwinTransformer`` with adapters at any placement of every
    block, or of the blocks ``adapter_blocks`` selects.

    Args:
        adapters: sublayer -> placement -> adapter config (or a list of
            them), e.g. ``dict(attn=dict(series=dict(type='MiMiAdapter',
            hidden_dim=64)), ffn=dict(fc1=dict(type='LoRA', r=8)))``; see
            :mod:`mmpeft.models.placements`. Token adapters are built with
            the block width.
        adapter_cp: recompute each adapter in backward instead of keeping its
            activations (same gradients; for Mona about a third less training
            memory for about 10% more step time on CPU). Blocks with
            ``with_cp`` recompute everything already.
        adapter_blocks: which blocks get the adapters: None (every block),
            ``dict(stages=[2, 3])`` (every block of those stages) and / or
            ``dict(blocks=[[2, 5], [3, 0]])`` (``[stage, block]`` pairs);
            see :mod:`mmpeft.models.block_selection`. No autograd graph is
            built before the first trainable block.
        frozen_activations_dtype: ``'bfloat16'`` stores what the frozen
            backbone saves for backward in bfloat16 (approximate gradients,
            less memory); None (default) keeps fp32. See
            :mod:`mmpeft.models.frozen_saves`.
        **kwargs: the stock ``SwinTransformer`` arguments.
    """
    block_class = AdapterSwinBlock
    block_vocabulary = BlockVocabulary(group='stages', block='blocks')

    def __init__(self,
                 adapters: Optional[dict] = None,
                 adapter_cp: bool = False,
                 adapter_blocks: Optional[dict] = None,
                 frozen_activations_dtype: Optional[str] = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.setup_slots(adapters, adapter_cp, adapter_blocks,
                         frozen_activations_dtype)

    def blocks(self):
        for stage in self.stages:
            yield from stage.blocks

    def block_grid(self):
        return [list(stage.blocks) for stage in self.stages]

    def forward_units(self):
        units = []
        for i, stage in enumerate(self.stages):
            units += list(stage.blocks)
            if stage.downsample is not None:
                units.append(stage.downsample)
            if i in self.out_indices:
                units.append(getattr(self, f'norm{i}'))
        return units

    def block_width(self, block: SwinBlock) -> int:
        return block.norm1.normalized_shape[0]

    def last_stage_prefixes(self):
        last = len(self.stages) - 1
        return (f'stages.{last}.', f'norm{last}.')

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
    (after each residual add of every block) and freezing.

    Args:
        adapter_cfg: the adapter of every slot (default: a 64-wide Mona).
        adapter_cp: see :class:`AdapterSwinTransformer`.
        **kwargs: ``adapter_blocks``, ``frozen_activations_dtype`` (see
            :class:`AdapterSwinTransformer`) and the stock
            ``SwinTransformer`` arguments.
    """
    default_adapter_cfg = dict(type='Mona', inner_dim=64)
    slot_names = PRESET_SLOT_NAMES

    def __init__(self,
                 adapter_cfg: Optional[dict] = None,
                 adapter_cp: bool = False,
                 **kwargs):
        adapter_cfg = dict(adapter_cfg or self.default_adapter_cfg)
        super().__init__(adapters=same_adapter_at('post', adapter_cfg),
                         adapter_cp=adapter_cp, **kwargs)
        self.adapter_cfg = adapter_cfg

    def deploy_backbone_cfg(self) -> dict:
        return dict(adapter_cfg=dict(self.slots[0].cfgs[0]),
                    **self.block_selection_cfg())
