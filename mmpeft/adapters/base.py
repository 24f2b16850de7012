"""The adapter contract and a small registry (pure PyTorch, no mm imports).

Every adapter is an ``nn.Module`` called as ``adapter(x, hw_shape) -> x`` with
tokens ``x`` of shape (B, N, C) and the (H, W) of the token map they came from.
Backbones own the slots where adapters are called; adapters own their maths,
their official initialisation (``reset_parameters``) and, where the maths
allows it, their own deploy-time simplification (``deploy``).
"""
from typing import Dict, Iterator, Sequence, Tuple, Type

import torch
from torch import nn

ADAPTERS: Dict[str, Type[nn.Module]] = {}


def register_adapter(cls: Type[nn.Module]) -> Type[nn.Module]:
    """Class decorator: make ``cls`` buildable as ``dict(type=cls.__name__)``."""
    ADAPTERS[cls.__name__] = cls
    return cls


def build_adapter(cfg: dict, in_dim: int) -> nn.Module:
    """Build the adapter that ``cfg`` names for tokens of width ``in_dim``."""
    cfg = dict(cfg)
    name = cfg.pop('type', None)
    if name not in ADAPTERS:
        raise KeyError(
            f'adapter_cfg names an unknown adapter type {name!r}; known '
            f'adapters are {sorted(ADAPTERS)}. Fix the `type` in adapter_cfg, '
            'or register your own class with '
            '`mmpeft.adapters.register_adapter`.')
    return ADAPTERS[name](in_dim, **cfg)


def check_token_map(x: torch.Tensor, hw_shape: Sequence[int]) -> None:
    """Raise if ``x`` (B, N, C) is not an H*W token map for ``hw_shape``."""
    if len(hw_shape) != 2:
        raise ValueError(f'hw_shape must be (H, W), got {tuple(hw_shape)}.')
    h, w = hw_shape
    if x.dim() != 3 or x.shape[1] != h * w:
        raise ValueError(
            f'Adapter got tokens of shape {tuple(x.shape)} with hw_shape '
            f'({h}, {w}); it needs (B, H*W, C) = (B, {h * w}, C). Pass the '
            'unpadded (H, W) of the token map, and strip class tokens first.')


def iter_adapters(module: nn.Module) -> Iterator[Tuple[str, nn.Module]]:
    """Yield ``(name, adapter)`` for every registered adapter type in ``module``."""
    adapter_types = tuple(ADAPTERS.values())
    for name, child in module.named_modules():
        if isinstance(child, adapter_types):
            yield name, child


def check_positive(name: str, value, owner: str,
                   allow_zero: bool = False) -> None:
    """Raise ``ValueError`` naming ``owner``'s argument ``name`` unless it is
    a positive integer (``>= 0`` with ``allow_zero``): checked at build, so a
    bad config fails there and not as a torch shape error in ``nn.Conv``."""
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(
            f'{owner}: {name} must be an integer >= {low}, got {value!r}; '
            f'fix {name} in adapter_cfg (or the backbone argument that sets '
            'it).')


def check_dropout(value, owner: str, name: str = 'dropout') -> None:
    """Raise ``ValueError`` unless ``value`` is a drop probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(
            value, (int, float)) or not 0 <= value < 1:
        raise ValueError(
            f'{owner}: {name} is the probability of zeroing an activation and '
            f'must be in [0, 1), got {value!r}; fix {name} in '
            'adapter_cfg.')
