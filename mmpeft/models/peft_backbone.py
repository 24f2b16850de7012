"""What every mmpeft backbone shares, whatever its adapters and its host.

A PEFT backbone is a stock mm backbone plus adapter slots. This mixin owns the
rest of the contract: pretrained weights are frozen, adapters train, a
pretrained checkpoint that leaves a frozen weight unloaded is an error (a
frozen random weight is a silent disaster), adapters keep their official init,
and ``merge_adapters`` turns the model into its deploy form.
"""
from contextlib import contextmanager
from typing import Dict, Iterator, List, Mapping, Optional, Set, Tuple

import torch
from mmengine.logging import MMLogger
from torch import nn

from ..adapters import iter_adapters
from .block_selection import (BlockVocabulary, graph_from_first_trainable,
                              resolve_block_selection)
from .frozen_saves import check_dtype, frozen_saves_in
from .placements import AdaptedBlock, merged_slots, parse_adapters, slots_to_cfg


class PretrainedMismatchError(RuntimeError):
    """The pretrained checkpoint does not cover the frozen backbone weights."""


class PEFTBackboneMixin:
    """Mix in before the stock backbone class: ``class X(PEFTBackboneMixin, Stock)``.

    Hosts say where their blocks are (:meth:`blocks`, :meth:`block_grid`,
    :meth:`block_width`, ``block_class``, an
    :class:`~mmpeft.models.placements.AdaptedBlock`), how ``adapter_blocks``
    names them (``block_vocabulary``), in which order the forward runs its
    parametrised modules (:meth:`forward_units`), and call
    :meth:`setup_slots` at the end of ``__init__``.
    """
    block_class = AdaptedBlock
    block_vocabulary: BlockVocabulary
    # Presets: block attribute of the one token slot of each sublayer.
    slot_names: Optional[Dict[str, str]] = None

    def blocks(self) -> Iterator[nn.Module]:
        raise NotImplementedError

    def block_grid(self) -> List[List[nn.Module]]:
        """The blocks by group (Swin: stages; ViT: one group), as
        ``adapter_blocks`` indexes them."""
        raise NotImplementedError

    def forward_units(self) -> List[nn.Module]:
        """The modules the forward runs after its stem, in order (blocks,
        downsampling and output norms); every parameter outside them is the
        stem's. :mod:`.block_selection` starts the graph at the first one
        that trains."""
        raise NotImplementedError

    def block_width(self, block: nn.Module) -> int:
        raise NotImplementedError

    def setup_slots(self, adapters: dict, adapter_cp: bool,
                    adapter_blocks: Optional[dict] = None,
                    frozen_activations_dtype: Optional[str] = None) -> None:
        """Adapters at their placements in the selected blocks (every
        block by default), then freezing. ``adapter_cfg`` and
        ``adapter_blocks`` record placements and blocks (checkpoint
        metadata); see :mod:`.block_selection` and :mod:`.frozen_saves`."""
        owner = type(self).__name__
        self.slots = parse_adapters(adapters, self.slot_names,
                                    self.weight_placements())
        self.adapter_cfg = slots_to_cfg(self.slots)
        grid = self.block_grid()
        self.adapter_blocks, positions = resolve_block_selection(
            adapter_blocks, [len(group) for group in grid],
            self.block_vocabulary, owner)
        self.frozen_activations_dtype = frozen_activations_dtype
        self._frozen_saves = check_dtype(frozen_activations_dtype, owner)
        for group, index in positions if self.slots else ():
            block = grid[group][index]
            self.block_class.adapt(block)
            block.adapter_cp = adapter_cp
            block.add_slots(self.slots, self.block_width(block))
        self.freeze_pretrained()

    def forward(self, inputs: torch.Tensor, *args, **kwargs):
        """The stock forward, with no graph before the first trainable
        module and, if set, the frozen activations saved at lower
        precision."""
        units = self.forward_units()
        in_units = {id(p) for unit in units for p in unit.parameters()}
        stem = [p for p in self.parameters() if id(p) not in in_units]
        with frozen_saves_in(self, self._frozen_saves), \
                graph_from_first_trainable(stem, units, inputs):
            return super().forward(inputs, *args, **kwargs)

    def weight_placements(self) -> Mapping[str, Tuple[str, ...]]:
        """The linears its blocks offer to weight adapters, per sublayer."""
        return self.block_class.weight_placements

    def last_stage_prefixes(self) -> Tuple[str, ...]:
        """Parameter-name prefixes of the last stage, with the norm of its
        output: what Partial-1 trains."""
        raise NotImplementedError(
            f'{type(self).__name__} does not say where its last stage is; '
            'define last_stage_prefixes() to use train_last_stage.')

    def named_adapters(self) -> Iterator[Tuple[str, nn.Module]]:
        return iter_adapters(self)

    def adapter_param_names(self) -> List[str]:
        prefixes = tuple(f'{name}.' for name, _ in self.named_adapters())
        return [n for n, _ in self.named_parameters() if n.startswith(prefixes)]

    def freeze_pretrained(self) -> None:
        """requires_grad False for every weight that is not in an adapter."""
        trainable = set(self.adapter_param_names())
        for name, param in self.named_parameters():
            param.requires_grad = name in trainable

    def init_weights(self) -> None:
        """Stock init / pretrained loading, then two guarantees: every frozen
        weight came from the checkpoint (if one is configured), and adapters
        the checkpoint did not provide get their official init."""
        logger = MMLogger.get_current_instance()
        with self._record_loaded_state() as loaded:
            self._load_pretrained()
        pretrained = self._pretrained_path()
        if pretrained is not None:
            self._check_frozen_weights_loaded(loaded, pretrained)
        else:
            logger.warning(
                f'{type(self).__name__}: no pretrained checkpoint configured; '
                'the frozen backbone weights are random. Set init_cfg='
                "dict(type='Pretrained', checkpoint=...) for real fine-tuning.")
        for name, adapter in self.named_adapters():
            if not any(k.startswith(f'{name}.') for k in loaded):
                adapter.reset_parameters()

    def _load_pretrained(self) -> None:
        """The stock ``init_weights``; hosts override to add context to errors."""
        super().init_weights()

    def _pretrained_path(self):
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') in ('Pretrained',
                                                          'Pretrained_Part'):
            return cfg.get('checkpoint')
        return None

    @contextmanager
    def _record_loaded_state(self) -> Iterator[Dict[str, torch.Size]]:
        """Collect the keys and shapes of state dicts loaded into ``self``."""
        loaded: Dict[str, torch.Size] = {}

        def record(module, state_dict, prefix, *args):
            for key, value in state_dict.items():
                if key.startswith(prefix) and hasattr(value, 'shape'):
                    loaded[key[len(prefix):]] = value.shape

        handle = self._register_load_state_dict_pre_hook(record, with_module=True)
        try:
            yield loaded
        finally:
            handle.remove()

    def _weights_not_in_pretrained(self) -> Set[str]:
        """Frozen weights that the host's pretrained checkpoints do not have
        by design; they keep their init. None by default."""
        return set()

    def _check_frozen_weights_loaded(self, loaded: Dict[str, torch.Size],
                                     checkpoint: str) -> None:
        exempt = set(self.adapter_param_names()) | \
            self._weights_not_in_pretrained()
        frozen = {
            name: param.shape
            for name, param in self.named_parameters() if name not in exempt
        }
        missing = sorted(k for k in frozen if k not in loaded)
        mismatched = sorted(f'{k}: checkpoint {tuple(loaded[k])} vs model '
                            f'{tuple(frozen[k])}' for k in frozen
                            if k in loaded and loaded[k] != frozen[k])
        if missing or mismatched:
            raise PretrainedMismatchError(
                f'{type(self).__name__}: the pretrained checkpoint {checkpoint!r} '
                f'leaves {len(missing) + len(mismatched)} of {len(frozen)} '
                'frozen backbone weights unloaded; they would stay random and '
                'never train.\n'
                f'  missing ({len(missing)}): {_preview(missing)}\n'
                f'  wrong shape ({len(mismatched)}): {_preview(mismatched)}\n'
                'Fix: use a checkpoint of this architecture (embed_dims, depths, '
                'patch size), check its key prefix, and for official releases '
                'set the converter flag (Swin: convert_weights=True).')
        unexpected = sorted(k for k in loaded if k not in dict(
            self.named_parameters()) and k not in dict(self.named_buffers()))
        if unexpected:
            MMLogger.get_current_instance().warning(
                f'{type(self).__name__}: {len(unexpected)} checkpoint keys have '
                f'no place in the backbone and were ignored: {_preview(unexpected)}')

    @torch.no_grad()
    def merge_adapters(self) -> nn.Module:
        """Deploy form, as the maths allows (weight updates added into their
        weights, affine ``pre`` adapters folded into the next linear, other
        adapters simplified); blocks left without adapters become stock
        blocks again. Exact in eval mode."""
        adapted = [b for b in self.blocks() if isinstance(b, AdaptedBlock)]
        for block in adapted:
            block.merge_slots()
        if adapted:  # read the slots left from a block that had them
            self.slots = merged_slots(self.slots, next(
                (b for b in adapted if any(b.token_slots.values())),
                adapted[0]))
        for block in adapted:
            if not block.has_adapters():
                block.restore_stock()
        return self

    def deploy_backbone_cfg(self) -> dict:
        """Backbone config updates that build this (merged) model."""
        return dict(adapters=slots_to_cfg(self.slots),
                    **self.block_selection_cfg())

    def block_selection_cfg(self) -> dict:
        """``adapter_blocks`` in canonical form, for deploy configs; empty
        when every block holds adapters (the default)."""
        return {} if self.adapter_blocks is None else dict(
            adapter_blocks=self.adapter_blocks)


def _preview(keys: List[str], limit: int = 8) -> str:
    shown = ', '.join(keys[:limit])
    return shown + (f', ... (+{len(keys) - limit} more)' if len(keys) > limit
                    else '') if keys else '-'


def merge_adapters(model: nn.Module) -> nn.Module:
    """Turn every PEFT backbone inside ``model`` into its deploy form, in place."""
    for module in list(model.modules()):
        if isinstance(module, PEFTBackboneMixin):
            module.merge_adapters()
    return model
