"""MiMi in mmdet's Swin: a bottleneck adapter on the output of each sublayer.

Placement as in the official code (IemProg/MiMi, ``models/swin_adapters.py``):
``x = x + drop_path(A(attn(norm1(x))))``, ``x = x + drop_path(A(mlp(norm2(x))))``
— the ``series`` placement of :mod:`mmpeft.models.placements`.

Training: every adapter starts ``4C / size_adapters`` neurons wide and
:class:`mmpeft.engine.MiMiPruneHook` switches neurons off with masks (shapes
stay fixed, so the optimizer, DDP and ``--resume`` need nothing special).
Deployment: :meth:`MiMiSwin.merge_adapters` shrinks every adapter to its live
neurons; a model with those shapes is rebuilt from config with
``adapter_widths`` (``deploy_backbone_cfg()`` gives it).
"""
from typing import Iterator, List, Optional, Sequence, Tuple

from mmengine.registry import MODELS

from ..adapters import MiMiAdapter
from .placements import PRESET_SLOT_NAMES, same_adapter_at
from .swin import AdapterSwinTransformer

PLACEMENTS = ('series', 'post')


@MODELS.register_module()
class MiMiSwin(AdapterSwinTransformer):
    """Swin with MiMi adapters (Marouf et al., WACV 2024).

    Args:
        size_adapters: the official width convention: each adapter starts
            with ``4 * C // size_adapters`` hidden neurons, C the width of its
            stage. The official run used 4 (hidden = C).
        sigma0: alias in mmpeft 0.1's convention, hidden = ``C // sigma0``,
            i.e. ``size_adapters = 4 * sigma0``. Give at most one of the two;
            with neither, sigma0 = 4 (0.1's default: hidden = C / 4).
        adapter_widths: hidden width of every slot, in slot order
            (stage, block, then attention slot before FFN slot; see
            :meth:`named_slots`; only the blocks ``adapter_blocks`` selects
            have slots); 0 is an identity without parameters. Set by deploy
            configs to rebuild shrunk adapters; overrides the above.
        adapter_bias: biases in the adapters (the official ones have none).
        placement: ``'series'`` (official: on the sublayer output, inside
            drop-path) or ``'post'`` (after the residual add, where mmpeft
            0.1 put MiMi: set it to reproduce files written by that version).
        **kwargs: ``adapter_blocks``, ``frozen_activations_dtype`` (see
            :class:`~mmpeft.models.swin.AdapterSwinTransformer`) and the stock
            mmdet ``SwinTransformer`` arguments.
    """
    slot_names = PRESET_SLOT_NAMES

    def __init__(self,
                 size_adapters: Optional[int] = None,
                 sigma0: Optional[int] = None,
                 adapter_widths: Optional[Sequence[int]] = None,
                 adapter_bias: bool = False,
                 placement: str = 'series',
                 **kwargs):
        if 'adapter_cfg' in kwargs or 'adapters' in kwargs:
            raise TypeError(
                'MiMiSwin builds its own adapters; set size_adapters (or '
                'sigma0) / adapter_widths / adapter_bias / placement instead '
                'of adapter_cfg / adapters.')
        if size_adapters is not None and sigma0 is not None:
            raise ValueError(
                'MiMiSwin: give size_adapters (hidden = 4C // size_adapters) '
                'or its alias sigma0 (hidden = C // sigma0), not both.')
        for name, value in (('size_adapters', size_adapters),
                            ('sigma0', sigma0)):
            if value is not None and not (isinstance(value, int)
                                          and value >= 1):
                raise ValueError(f'MiMiSwin: {name} must be an integer >= 1, '
                                 f'got {value!r}.')
        if placement not in PLACEMENTS:
            raise ValueError(f'MiMiSwin: placement must be one of '
                             f'{PLACEMENTS}, got {placement!r}.')
        if size_adapters is not None:
            width_rule = dict(size_adapters=size_adapters)
            divisor, multiplier = size_adapters, 4
        else:  # mmpeft 0.1's default, sigma0 = 4 (size_adapters = 16)
            sigma0 = 4 if sigma0 is None else sigma0
            width_rule = dict(sigma0=sigma0)
            divisor, multiplier = sigma0, 1
        # Every slot is built one neuron wide, then rebuilt at its width.
        super().__init__(adapters=same_adapter_at(
            placement, dict(type='MiMiAdapter', hidden_dim=1,
                            bias=adapter_bias)), **kwargs)
        # What checkpoints record and adapter files are checked against;
        # mmpeft 0.1 recorded no placement (it was always 'post').
        self.adapter_cfg = dict(type='MiMiAdapter', **width_rule,
                                bias=adapter_bias)
        if placement != 'post':
            self.adapter_cfg['placement'] = placement
        if adapter_widths is None:
            in_dims = [a.in_dim for _, a in self.named_slots()]
            if multiplier * min(in_dims) < divisor:
                rule, value = next(iter(width_rule.items()))
                raise ValueError(
                    f'MiMiSwin: {rule}={value} leaves no neuron in an adapter '
                    f'of width {min(in_dims)}; use sigma0 <= {min(in_dims)} '
                    f'(size_adapters <= {4 * min(in_dims)}).')
            adapter_widths = [multiplier * c // divisor for c in in_dims]
        self._rebuild_slots(adapter_widths)
        self.freeze_pretrained()

    def named_slots(self) -> Iterator[Tuple[str, MiMiAdapter]]:
        """``(name, adapter)`` for every slot, in ``adapter_widths`` order."""
        for i, stage in enumerate(self.stages):
            for j, block in enumerate(stage.blocks):
                for slot in ('attn_adapter', 'ffn_adapter'):
                    if hasattr(block, slot):  # a block adapter_blocks chose
                        yield (f'stages.{i}.blocks.{j}.{slot}',
                               getattr(block, slot))

    def adapter_widths(self) -> List[int]:
        """Live neurons per slot: the widths :meth:`merge_adapters` keeps."""
        return [adapter.width for _, adapter in self.named_slots()]

    def deploy_backbone_cfg(self) -> dict:
        """Backbone config updates that rebuild this model's shrunk shapes.

        A deploy config is the training config with
        ``model.backbone.update(deploy_backbone_cfg())`` (and no pretrained
        ``init_cfg`` needed: the deploy checkpoint holds every weight).
        Valid before and after :meth:`merge_adapters`."""
        return dict(adapter_widths=self.adapter_widths(),
                    **self.block_selection_cfg())

    def _rebuild_slots(self, widths: Sequence[int]) -> None:
        slots = list(self.named_slots())
        if len(widths) != len(slots) or any(
                not isinstance(w, int) or w < 0 for w in widths):
            raise ValueError(
                f'MiMiSwin: adapter_widths needs {len(slots)} integers >= 0 '
                '(two slots per adapted block: attention then FFN, blocks in '
                f'stage order), got {len(widths)}: {list(widths)!r}. Take it '
                "from MiMiSwin.deploy_backbone_cfg() or the training "
                "checkpoint's meta['mimi']['widths'].")
        for (name, old), width in zip(slots, widths):
            block_name, slot = name.rsplit('.', 1)
            setattr(
                self.get_submodule(block_name), slot,
                MiMiAdapter(old.in_dim, width, bias=old.use_bias))
