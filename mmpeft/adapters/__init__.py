"""Adapters: pure PyTorch modules; token adapters ``adapter(x, hw_shape) -> x``
and weight adapters (updates of one linear layer)."""
from .base import (ADAPTERS, Adapter, SideNetwork, WeightAdapter,
                   build_adapter, build_weight_adapter, check_token_map,
                   iter_adapters, register_adapter)
from .adaptformer import AdaptFormer
from .bottleneck import BottleneckAdapter
from .e3va import E3VAAdapter, E3VAHighway
from .houlsby import HoulsbyAdapter
from .lora import LoRA
from .lorand import LoRand
from .mimi import MiMiAdapter
from .mona import Mona
from .repadapter import RepAdapter

__all__ = [
    'ADAPTERS', 'Adapter', 'WeightAdapter', 'build_adapter',
    'build_weight_adapter', 'check_token_map', 'iter_adapters',
    'register_adapter', 'LoRA', 'Mona', 'RepAdapter', 'MiMiAdapter',
    'HoulsbyAdapter', 'AdaptFormer', 'LoRand', 'BottleneckAdapter',
    'SideNetwork', 'E3VAAdapter', 'E3VAHighway'
]
