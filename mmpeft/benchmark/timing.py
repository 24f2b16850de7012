"""Step times on the clock a run asks for."""
import time
from typing import Callable

import torch

TIMERS = dict(
    # Elapsed time: what a user waits for.
    wall=time.perf_counter,
    # CPU seconds of this process (all its threads): on a shared CPU
    # machine, single-threaded, it does not grow when other processes
    # compete for the cores, so ratios stay honest under load.
    cpu=time.process_time)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels (a no-op on CPU)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device,
          timer: str = 'wall') -> float:
    """Milliseconds of ``fn()`` on the ``timer`` clock."""
    clock = TIMERS[timer]
    synchronize(device)
    start = clock()
    fn()
    synchronize(device)
    return (clock() - start) * 1e3
