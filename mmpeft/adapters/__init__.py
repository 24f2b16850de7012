"""Adapters: pure PyTorch modules with the ``adapter(x, hw_shape) -> x`` contract."""
from .base import (ADAPTERS, build_adapter, check_token_map, iter_adapters,
                   register_adapter)
from .mimi import MiMiAdapter
from .mona import Mona
from .repadapter import RepAdapter

__all__ = [
    'ADAPTERS', 'build_adapter', 'check_token_map', 'iter_adapters',
    'register_adapter', 'Mona', 'RepAdapter', 'MiMiAdapter'
]
