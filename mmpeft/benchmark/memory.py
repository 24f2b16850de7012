"""Peak memory of a step, and what a variant keeps resident between steps.

Peak memory of a step is what the variant keeps resident (weights, buffers
and, for a training step, optimizer state) plus the largest rise of
allocated bytes during the step.
On CUDA the rise comes from ``torch.cuda.max_memory_allocated``; on CPU from
the allocation events of ``torch.profiler`` (``profile_memory=True``), which
see every allocation and free of PyTorch's CPU allocator, those of mmcv's C++
ops included. Both stay per variant although all variants share one process,
and neither counts allocator caching or fragmentation. (Peak RSS cannot do
this: it is process-wide, never decreases, and includes whatever the C
allocator keeps cached.)
"""
from typing import Callable, Sequence

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from .timing import synchronize

MiB = 1 << 20

_MEASURED_CALL = 'mmpeft.benchmark.measured_call'


def peak_rise_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Largest rise of allocated bytes above the level at the start of
    ``fn()`` (see the module docstring)."""
    if device.type == 'cuda':
        synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    # The profiler cannot size the free of a block allocated before it
    # started, so ``fn`` runs twice and only the second run counts: what
    # it frees was allocated by the first one or is long-lived state.
    with profile(activities=[ProfilerActivity.CPU],
                 profile_memory=True) as prof:
        fn()
        with record_function(_MEASURED_CALL):
            fn()
    events = list(prof.profiler.kineto_results.events())
    window = next(e for e in events if e.name() == _MEASURED_CALL)
    level = peak = 0
    for start_ns, nbytes in sorted((e.start_ns(), e.nbytes()) for e in events
                                   if e.name() == '[memory]'
                                   and e.start_ns() >= window.start_ns()
                                   and e.start_ns() <= window.end_ns()):
        level += nbytes
        peak = max(peak, level)
    return peak


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    storages = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[(storage.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def resident_bytes(module: nn.Module, optimizer=None) -> int:
    """Weights, buffers, gradients and (for training) optimizer state held
    between steps."""
    tensors = [*module.parameters(), *module.buffers()]
    tensors += [p.grad for p in module.parameters() if p.grad is not None]
    for state in (optimizer.state.values() if optimizer else ()):
        tensors += [v for v in state.values() if torch.is_tensor(v)]
    return storage_bytes(tensors)


def optimizer_state_summary(optimizer, params: Sequence[nn.Parameter]) -> dict:
    """How ``optimizer`` treats ``params``: how many it holds in its param
    groups, how many have state, and that state's tensors and MiB."""
    ids = {id(p) for p in params}
    in_groups = sum(1 for group in optimizer.param_groups
                    for p in group['params'] if id(p) in ids)
    states = [s for p, s in optimizer.state.items() if id(p) in ids and s]
    tensors = [v for s in states for v in s.values() if torch.is_tensor(v)]
    return dict(params_in_groups=in_groups, params_with_state=len(states),
                state_tensors=len(tensors),
                state_mib=storage_bytes(tensors) / MiB)
