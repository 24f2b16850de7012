"""Keep what the frozen backbone saves for backward at lower precision.

With frozen weights, a PEFT step still back-propagates the input gradient
through every block after the first trainable one, so those blocks keep
their activations (LayerNorm inputs, attention maps, GELU inputs) as full
fine-tuning does. ``frozen_activations_dtype='bfloat16'`` stores each such
floating-point tensor in bfloat16 while the forward pass, the parameters and
the adapters stay fp32: the tensor is rounded when autograd saves it
(``torch.autograd.graph.saved_tensors_hooks``) and cast back to its dtype when
backward reads it. Forward outputs are unchanged; gradients are approximate
(bfloat16 keeps 8 bits of mantissa).

Not rounded: parameters and views of them (a frozen weight saved for the
input gradient), tensors already at or below the target size, integer and
boolean tensors (dropout masks, indices), and everything saved inside an
adapter (``adapter_scope``): the adapters' own gradients read what they
saved in full precision. Inside checkpointed code (``with_cp``,
``adapter_cp``) checkpointing's own hooks take over: there is nothing saved
to round.
"""
import threading
import weakref
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import nn
from torch.autograd.graph import saved_tensors_hooks

DTYPES = {'bfloat16': torch.bfloat16, 'float16': torch.float16}

_state = threading.local()


def check_dtype(name: Optional[str], owner: str) -> Optional[torch.dtype]:
    """The torch dtype ``name`` stands for (None: off), or a clear error."""
    if name is None:
        return None
    if name not in DTYPES:
        raise ValueError(
            f'{owner}: frozen_activations_dtype must be None (off) or one '
            f'of {sorted(DTYPES)}, got {name!r}. bfloat16 keeps fp32\'s '
            'range; float16 may overflow on large activations.')
    return DTYPES[name]


@contextmanager
def adapter_scope() -> Iterator[None]:
    """Mark the enclosed calls as adapter maths: what they save for backward
    keeps its precision."""
    _state.adapter_depth = getattr(_state, 'adapter_depth', 0) + 1
    try:
        yield
    finally:
        _state.adapter_depth -= 1


class _Rounded:
    """A saved tensor stored in lower precision, with the dtype to restore."""
    __slots__ = ('tensor', 'dtype')

    def __init__(self, tensor: torch.Tensor, dtype: torch.dtype):
        self.tensor = tensor
        self.dtype = dtype


class FrozenSavesPacker:
    """The pack / unpack pair of one forward pass of ``module``.

    A tensor saved twice (by two ops) is rounded once and both saves share
    the copy, so rounding never costs more than the fp32 tensor did.
    """

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        self.dtype = dtype
        self.itemsize = torch.empty((), dtype=dtype).element_size()
        self.param_storages = {
            p.untyped_storage().data_ptr() for p in module.parameters()}
        self.rounded = {}  # id(tensor) -> (weakref to it, its copy)

    def pack(self, tensor: torch.Tensor):
        if (getattr(_state, 'adapter_depth', 0)
                or not tensor.is_floating_point()
                or tensor.element_size() <= self.itemsize
                or tensor.untyped_storage().data_ptr() in self.param_storages):
            return tensor
        seen = self.rounded.get(id(tensor))
        if seen is not None and seen[0]() is tensor:
            return seen[1]
        packed = _Rounded(tensor.detach().to(self.dtype), tensor.dtype)
        self.rounded[id(tensor)] = (weakref.ref(tensor), packed)
        return packed

    @staticmethod
    def unpack(packed) -> torch.Tensor:
        if isinstance(packed, _Rounded):
            return packed.tensor.to(packed.dtype)
        return packed


@contextmanager
def frozen_saves_in(module: nn.Module,
                    dtype: Optional[torch.dtype]) -> Iterator[None]:
    """Round what the enclosed forward of ``module`` saves for backward to
    ``dtype`` (see the module docstring); nothing when ``dtype`` is None or
    grad mode is off."""
    if dtype is None or not torch.is_grad_enabled():
        yield
        return
    packer = FrozenSavesPacker(module, dtype)
    try:
        with saved_tensors_hooks(packer.pack, packer.unpack):
            yield
    finally:
        # Saves hold their copies; the cache must not keep them past their
        # node's backward.
        packer.rounded.clear()
