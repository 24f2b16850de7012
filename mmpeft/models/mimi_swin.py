"""MiMi in mmdet's Swin: a bottleneck adapter after each residual of every block.

Training: every adapter starts ``C / sigma0`` neurons wide and
:class:`mmpeft.engine.MiMiPruneHook` switches neurons off with masks (shapes
stay fixed, so the optimizer, DDP and ``--resume`` need nothing special).
Deployment: :meth:`MiMiSwin.merge_adapters` shrinks every adapter to its live
neurons; a model with those shapes is rebuilt from config with
``adapter_widths`` (``deploy_backbone_cfg()`` gives it).
"""
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from mmengine.registry import MODELS

from ..adapters import MiMiAdapter
from .swin import AdapterSwinTransformer


@MODELS.register_module()
class MiMiSwin(AdapterSwinTransformer):
    """Swin with MiMi adapters (Marouf et al., WACV 2024).

    Args:
        sigma0: initial compression: each adapter starts with
            ``C // sigma0`` hidden neurons, C the width of its stage.
        adapter_widths: hidden width of every slot, in slot order
            (stage, block, then attention slot before FFN slot; see
            :meth:`named_slots`); 0 is an identity without parameters. Set by
            deploy configs to rebuild shrunk adapters; overrides ``sigma0``.
        adapter_bias: biases in the adapters (the official ones have none).
        **kwargs: the stock mmdet ``SwinTransformer`` arguments.
    """

    def __init__(self,
                 sigma0: int = 4,
                 adapter_widths: Optional[Sequence[int]] = None,
                 adapter_bias: bool = False,
                 **kwargs):
        if 'adapter_cfg' in kwargs:
            raise TypeError(
                'MiMiSwin builds its own adapters; set sigma0 / '
                'adapter_widths / adapter_bias instead of adapter_cfg.')
        if not (isinstance(sigma0, int) and sigma0 >= 1):
            raise ValueError(f'MiMiSwin: sigma0 must be an integer >= 1 '
                             f'(hidden width C // sigma0), got {sigma0!r}.')
        # build_slot_adapter reads sigma0 and bias from adapter_cfg, which the
        # parent sets before it builds the slots.
        super().__init__(
            adapter_cfg=dict(
                type='MiMiAdapter', sigma0=sigma0, bias=adapter_bias),
            **kwargs)
        if adapter_widths is not None:
            self._rebuild_slots(adapter_widths)
            self.freeze_pretrained()

    def build_slot_adapter(self, in_dim: int) -> MiMiAdapter:
        sigma0 = self.adapter_cfg['sigma0']
        if in_dim < sigma0:
            raise ValueError(
                f'MiMiSwin: sigma0={sigma0} leaves no neuron in an adapter '
                f'of width {in_dim}; use sigma0 <= {in_dim}.')
        return MiMiAdapter(
            in_dim, in_dim // sigma0, bias=self.adapter_cfg['bias'])

    def named_slots(self) -> Iterator[Tuple[str, MiMiAdapter]]:
        """``(name, adapter)`` for every slot, in ``adapter_widths`` order."""
        for i, stage in enumerate(self.stages):
            for j, block in enumerate(stage.blocks):
                for slot in ('attn_adapter', 'ffn_adapter'):
                    yield (f'stages.{i}.blocks.{j}.{slot}',
                           getattr(block, slot))

    def adapter_widths(self) -> List[int]:
        """Live neurons per slot: the widths :meth:`merge_adapters` keeps."""
        return [adapter.width for _, adapter in self.named_slots()]

    def deploy_backbone_cfg(self) -> Dict[str, List[int]]:
        """Backbone config updates that rebuild this model's shrunk shapes.

        A deploy config is the training config with
        ``model.backbone.update(deploy_backbone_cfg())`` (and no pretrained
        ``init_cfg`` needed: the deploy checkpoint holds every weight).
        Valid before and after :meth:`merge_adapters`."""
        return dict(adapter_widths=self.adapter_widths())

    def _rebuild_slots(self, widths: Sequence[int]) -> None:
        slots = list(self.named_slots())
        if len(widths) != len(slots) or any(
                not isinstance(w, int) or w < 0 for w in widths):
            raise ValueError(
                f'MiMiSwin: adapter_widths needs {len(slots)} integers >= 0 '
                '(two slots per block: attention then FFN, blocks in stage '
                f'order), got {len(widths)}: {list(widths)!r}. Take it from '
                "MiMiSwin.deploy_backbone_cfg() or the training checkpoint's "
                "meta['mimi']['widths'].")
        for (name, old), width in zip(slots, widths):
            block_name, slot = name.rsplit('.', 1)
            setattr(
                self.get_submodule(block_name), slot,
                MiMiAdapter(old.in_dim, width, bias=old.use_bias))
