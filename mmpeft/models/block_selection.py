"""Which blocks of a host get adapters, and where its autograd graph starts.

Placements (:mod:`.placements`) say where in a block an adapter sits;
``adapter_blocks`` says which blocks get them, for every method and both
hosts. ``None`` (the default) is every block; otherwise a dict in the host's
own terms, the keys combining as a union:

=====  ==================================  ===================================
host   key                                 selects
=====  ==================================  ===================================
Swin   ``stages=[2, 3]``                   every block of those stages
Swin   ``blocks=[[2, 4], [3, 0]]``         single blocks, as ``[stage, block]``
ViT    ``layers=[6, 7, 8, 9, 10, 11]``     those encoder layers
=====  ==================================  ===================================

Indices count from 0; negative ones count from the end, as in Python
(``stages=[-2, -1]``: the last two stages). Blocks left out stay stock
blocks. The backbone records the selection in one canonical form
(``adapter_blocks`` attribute: whole stages under ``stages``, the other
blocks under ``blocks``, indices from 0; None when every block is selected),
which checkpoints, adapter-only files and deploy configs carry.

Where the graph starts. A frozen block whose input needs no gradient keeps
nothing for backward; ``graph_from_first_trainable`` makes that explicit: the
backbone runs under ``torch.no_grad`` up to the first module, in forward
order, that holds a trainable parameter, found from ``requires_grad`` at
every forward (so ``frozen_stages``, BitFit, NormTuning or Partial-1 move it,
and an unfrozen stem parameter turns it off). A method restricted to the
last stages pays only for those.
"""
from contextlib import contextmanager
from typing import (Iterable, Iterator, List, Mapping, NamedTuple, Optional,
                    Sequence, Tuple)

import torch
from torch import nn


class BlockVocabulary(NamedTuple):
    """The keys of ``adapter_blocks`` on one host.

    Args:
        group: the key of whole groups (Swin ``'stages'``), or None for a
            host with one group of blocks (ViT).
        block: the key of single blocks: ``[group, block]`` pairs on a
            grouped host (Swin ``'blocks'``), plain indices otherwise (ViT
            ``'layers'``).
        group_noun / block_noun: how errors name them.
    """
    group: Optional[str]
    block: str
    group_noun: str = 'stage'
    block_noun: str = 'block'

    def keys(self) -> Tuple[str, ...]:
        return tuple(k for k in (self.group, self.block) if k)

    def example(self) -> str:
        if self.group:
            return (f'dict({self.group}=[2, 3]) or '
                    f'dict({self.block}=[[2, 4], [3, 0]])')
        return f'dict({self.block}=[6, 7, 8, 9, 10, 11])'


Position = Tuple[int, int]  # (group, block within the group)


def _index(value, size: int, where: str, noun: str, owner: str) -> int:
    """``value`` as an index in ``range(size)`` (negative from the end);
    ``owner`` names what has ``size`` of them."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'{where}: {value!r} is not an integer index.')
    if not -size <= value < size:
        raise ValueError(
            f'{where}: {noun} {value} does not exist; {owner} has {size} '
            f'{noun}s (0..{size - 1}, or -{size}..-1 from the end).')
    return value % size


def _as_list(value, where: str) -> list:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(
            value, Iterable):
        raise ValueError(f'{where} must be a list of indices, got {value!r}.')
    return list(value)


def resolve_block_selection(
        selection: Optional[Mapping], sizes: Sequence[int],
        vocabulary: BlockVocabulary, owner: str
) -> Tuple[Optional[dict], List[Position]]:
    """``adapter_blocks`` -> (its canonical form, the selected positions).

    ``sizes`` is the number of blocks of each group (Swin: ``depths``; ViT:
    one group of ``num_layers``). The canonical form is None when every
    block is selected, so a file that recorded no selection matches.
    """
    every = [(g, b) for g, size in enumerate(sizes) for b in range(size)]
    if selection is None:
        return None, every
    keys = vocabulary.keys()
    if not isinstance(selection, Mapping):
        raise ValueError(
            f'{owner}: adapter_blocks must be None (every block) or a dict '
            f'such as {vocabulary.example()}; got {selection!r}.')
    unknown = [k for k in selection if k not in keys]
    if unknown:
        raise ValueError(
            f'{owner}: adapter_blocks has no key {unknown[0]!r}; this host '
            f'takes {list(keys)}, e.g. {vocabulary.example()}.')
    chosen = set()
    if vocabulary.group:
        where = f'{owner}: adapter_blocks.{vocabulary.group}'
        for value in _as_list(selection.get(vocabulary.group, []), where):
            group = _index(value, len(sizes), where, vocabulary.group_noun,
                           'this backbone')
            chosen.update((group, b) for b in range(sizes[group]))
    where = f'{owner}: adapter_blocks.{vocabulary.block}'
    for value in _as_list(selection.get(vocabulary.block, []), where):
        if vocabulary.group:
            pair = _as_list(value, f'{where} entry') if not isinstance(
                value, int) else [value]
            if len(pair) != 2:
                raise ValueError(
                    f'{where}: {value!r} is not a [{vocabulary.group_noun}, '
                    f'{vocabulary.block_noun}] pair; to select a whole '
                    f'{vocabulary.group_noun} use {vocabulary.group}=[...].')
            group = _index(pair[0], len(sizes), where,
                           vocabulary.group_noun, 'this backbone')
            block = _index(pair[1], sizes[group], where,
                           vocabulary.block_noun,
                           f'{vocabulary.group_noun} {group}')
        else:
            group, block = 0, _index(value, sizes[0], where,
                                     vocabulary.block_noun, 'this backbone')
        chosen.add((group, block))
    if not chosen:
        raise ValueError(
            f'{owner}: adapter_blocks={dict(selection)!r} selects no block. '
            f'Select some ({vocabulary.example()}); for no adapters at all '
            'use adapters=dict() (the frozen stock backbone).')
    positions = [p for p in every if p in chosen]
    if len(positions) == len(every):
        return None, positions
    return _canonical(positions, sizes, vocabulary), positions


def _canonical(positions: List[Position], sizes: Sequence[int],
               vocabulary: BlockVocabulary) -> dict:
    if not vocabulary.group:
        return {vocabulary.block: [b for _, b in positions]}
    whole = [g for g, size in enumerate(sizes)
             if size and all((g, b) in positions for b in range(size))]
    single = [[g, b] for g, b in positions if g not in whole]
    cfg = {}
    if whole:
        cfg[vocabulary.group] = whole
    if single:
        cfg[vocabulary.block] = single
    return cfg


def first_trainable(stem: Iterable[nn.Parameter],
                    units: Sequence[nn.Module]) -> Optional[int]:
    """Index in ``units`` of the first module with a trainable parameter;
    -1 when a stem parameter trains, None when nothing trains."""
    if any(p.requires_grad for p in stem):
        return -1
    for i, unit in enumerate(units):
        if any(p.requires_grad for p in unit.parameters()):
            return i
    return None


def _enable_grad(module: nn.Module, args) -> None:
    torch.set_grad_enabled(True)


@contextmanager
def graph_from_first_trainable(stem: Iterable[nn.Parameter],
                               units: Sequence[nn.Module],
                               inputs: torch.Tensor) -> Iterator[None]:
    """Run the enclosed forward under ``torch.no_grad`` until the first of
    ``units`` (modules in forward order after the stem, whose parameters are
    ``stem``) with a trainable parameter; grad mode comes back on as that
    module is called, and as before once the block exits.

    Nothing changes when grad mode is off, the inputs require grad, or a
    stem parameter trains.
    """
    if not torch.is_grad_enabled() or inputs.requires_grad:
        yield
        return
    first = first_trainable(stem, units)
    if first == -1:
        yield
        return
    handle = None if first is None else \
        units[first].register_forward_pre_hook(_enable_grad)
    try:
        with torch.no_grad():
            yield
    finally:
        if handle is not None:
            handle.remove()
