"""Which neurons a pruning round keeps: per-neuron scores and the two
selection rules, global across adapters (pure functions on the adapters'
weights and masks; rank 0 calls them)."""
from typing import List, Sequence

import torch

from ...adapters import MiMiAdapter


def neuron_scores(adapters: Sequence[MiMiAdapter],
                  weighted: bool = False) -> List[torch.Tensor]:
    """Per adapter, the score of each neuron (masked ones score 0), divided
    by the adapter's best score when ``weighted`` (an adapter without a
    scoring neuron keeps its zeros)."""
    scores = [a.importance() for a in adapters]
    if weighted:
        scores = [
            torch.where(s != 0, s / s.max(), s) if s.numel() else s
            for s in scores
        ]
    return scores


def global_prune_masks(adapters: Sequence[MiMiAdapter],
                       live_after: int,
                       weighted: bool = False) -> torch.Tensor:
    """``'within'`` rule. New masks of ``adapters``, concatenated in order:
    the ``live_after`` best-scored live neurons over all adapters stay on
    (ties go to the neuron first in adapter order), whichever adapters they
    are in."""
    masks = torch.cat([a.neuron_mask for a in adapters]).clone()
    live = masks.nonzero().flatten()
    if not 0 <= live_after <= live.numel():
        raise ValueError(f'cannot keep {live_after} of {live.numel()} live '
                         'neurons')
    scores = torch.cat(neuron_scores(adapters, weighted)).to(masks.device)
    ranked = torch.sort(scores[live], stable=True).indices
    masks[live[ranked[:live.numel() - live_after]]] = 0
    return masks


def official_prune_masks(adapters: Sequence[MiMiAdapter],
                         survivors: int,
                         weighted: bool = False) -> torch.Tensor:
    """``'rounds'`` rule, the official ``structured_magnitude_pruning_layer``:
    the threshold is the ``survivors``-th best score over every neuron of
    every adapter (masked ones score 0) and each live neuron scoring at
    least that stays, so a tie at the threshold keeps all its neurons.

    One case differs by construction: if live neurons score exactly 0 (all
    their weights zero) and the threshold falls to 0, the official code
    switches every masked neuron back on, with the weights it had; mmpeft
    zeroed those weights and keeps them off."""
    masks = torch.cat([a.neuron_mask for a in adapters]).clone()
    scores = torch.cat(neuron_scores(adapters, weighted)).to(masks.device)
    if not 0 <= survivors <= scores.numel():
        raise ValueError(f'cannot keep {survivors} of {scores.numel()} '
                         'neurons')
    if survivors == 0:
        return torch.zeros_like(masks)
    threshold = torch.topk(scores, survivors).values[-1]
    return masks * (scores >= threshold).to(masks.dtype)
