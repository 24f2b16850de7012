"""A pruning round applied: the new masks set on the adapters and the
pruned entries of the optimizer state zeroed, so nothing can move a pruned
weight again. Shapes never change, so DDP and the optimizer keep working."""
from typing import Sequence

import torch
from mmengine.optim import OptimWrapperDict

from ...adapters import MiMiAdapter


def apply_masks(adapters: Sequence[MiMiAdapter], masks: torch.Tensor) -> None:
    """Split the concatenated ``masks`` per adapter and set each one."""
    sizes = [a.hidden_dim for a in adapters]
    for adapter, mask in zip(adapters, masks.split(sizes)):
        adapter.set_mask(mask)


def clear_optimizer_state(optim_wrapper,
                          adapters: Sequence[MiMiAdapter]) -> None:
    """Zero the masked entries of every per-parameter optimizer tensor
    (AdamW exp_avg / exp_avg_sq, SGD momentum, ...) of an OptimWrapper or
    OptimWrapperDict."""
    wrappers = (optim_wrapper.values()
                if isinstance(optim_wrapper, OptimWrapperDict) else
                [optim_wrapper])
    for optimizer in (w.optimizer for w in wrappers):
        for adapter in adapters:
            dead = (adapter.neuron_mask == 0).nonzero().flatten()
            for param, axis in adapter.neuron_axes():
                for value in optimizer.state.get(param, {}).values():
                    if torch.is_tensor(value) and value.shape == param.shape:
                        value.index_fill_(axis, dead, 0.0)
