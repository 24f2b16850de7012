"""The adapter contracts and a small registry (pure PyTorch, no mm imports).

Two kinds of adapter, told apart by where a host can put them:

* :class:`Adapter` maps tokens to tokens, ``adapter(x, hw_shape) -> x`` with
  ``x`` of shape (B, N, C) and the (H, W) of the token map, as
  ``x + delta(x, hw_shape)``. Hosts call it before a sublayer, on its output,
  after the residual add (``forward``) or parallel to it (``delta``).
* :class:`WeightAdapter` updates the weight of one linear layer,
  ``y = W x + b + adapter(x)`` with ``adapter(x) == x @ delta_weight().T`` in
  eval mode (LoRA); it merges by adding ``delta_weight()`` into ``W``.

A :class:`SideNetwork` is neither: a trainable network beside a frozen
backbone (E3VA's highway) that reads the backbone's activations and changes
only the features it returns. It counts as an adapter (it trains, it is in
the adapter-only checkpoint) but sits in no block.

Adapters own their maths, their official initialisation
(``reset_parameters``) and what their maths allows at deploy time: an affine
:class:`Adapter` says so with ``as_affine`` (the host folds it into the next
linear layer), others simplify themselves with ``deploy`` and say which
config rebuilds that form with ``deploy_cfg``. Hosts decide where adapters
go (:mod:`mmpeft.models.placements`), never what they compute.
"""
from typing import (Dict, Iterator, Optional, Sequence, Tuple, Type, Union)

import torch
from torch import nn

AdapterClass = Type[Union['Adapter', 'WeightAdapter']]
ADAPTERS: Dict[str, AdapterClass] = {}


class Adapter(nn.Module):
    """Token adapter: ``forward(x, hw_shape) = x + delta(x, hw_shape)``.

    Subclasses implement :meth:`delta` and :meth:`reset_parameters`; they
    override :meth:`as_affine`, :meth:`deploy` and :meth:`deploy_cfg` where
    their maths allows it.
    """
    # Arranges the tokens as the (H, W) map (a convolution): a host whose
    # tokens also hold others (class, register tokens) hands it only the
    # H*W patch tokens and passes the others by.
    reads_token_map = False

    def forward(self, x: torch.Tensor,
                hw_shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        return x + self.delta(x, hw_shape)

    def delta(self, x: torch.Tensor,
              hw_shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        """What the adapter adds to its input (the parallel placement adds
        it to the sublayer output instead)."""
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """The official initialisation (used for adapters that a checkpoint
        does not provide)."""
        raise NotImplementedError

    def as_affine(self) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """``(M, c)`` with ``forward(x) == x @ M.T + c`` in eval mode, if the
        adapter is affine; None otherwise (it cannot fold into a linear)."""
        return None

    def deploy(self) -> 'Adapter':
        """Turn into the inference form in place (same outputs); returns
        ``self``."""
        return self

    def deploy_cfg(self) -> dict:
        """Config updates that build the form :meth:`deploy` leaves."""
        return {}


class WeightAdapter(nn.Module):
    """Update of one linear layer's weight (``in_features`` ->
    ``out_features``): ``forward(x)`` is what it adds to the layer output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        """The (out_features, in_features) update; merging adds it to W."""
        raise NotImplementedError

    def reset_parameters(self) -> None:
        raise NotImplementedError


class SideNetwork(nn.Module):
    """A trainable network beside a frozen backbone: it reads activations
    the backbone computed without a graph and adds to the features the
    backbone returns; nothing of it feeds back into the backbone. Its host
    drives it (:mod:`mmpeft.models.side_network`)."""

    def reset_parameters(self) -> None:
        """Its initialisation (used when a checkpoint does not provide it)."""
        raise NotImplementedError


def register_adapter(cls: AdapterClass) -> AdapterClass:
    """Class decorator: make ``cls`` buildable as ``dict(type=cls.__name__)``."""
    if not issubclass(cls, (Adapter, WeightAdapter)):
        raise TypeError(
            f'{cls.__name__} must subclass mmpeft.adapters.Adapter (token '
            'adapters) or WeightAdapter (linear-weight updates) to be '
            'registered.')
    ADAPTERS[cls.__name__] = cls
    return cls


def adapter_class(cfg: dict) -> AdapterClass:
    """The registered class that ``cfg['type']`` names."""
    name = cfg.get('type')
    if name not in ADAPTERS:
        raise KeyError(
            f'The adapter config {dict(cfg)!r} names an unknown adapter type '
            f'{name!r}; known adapters are {sorted(ADAPTERS)}. Fix its '
            '`type`, or register your own class with '
            '`mmpeft.adapters.register_adapter`.')
    return ADAPTERS[name]


def build_adapter(cfg: dict, in_dim: int) -> Adapter:
    """Build the token adapter that ``cfg`` names for tokens of width
    ``in_dim``."""
    cls = adapter_class(cfg)
    if not issubclass(cls, Adapter):
        raise TypeError(
            f'{cls.__name__} updates a linear weight; it goes on a weight '
            "placement (e.g. adapters=dict(attn=dict(qkv=...))), not on a "
            'token placement (pre / series / parallel / post).')
    return cls(in_dim, **{k: v for k, v in cfg.items() if k != 'type'})


def build_weight_adapter(cfg: dict, in_features: int,
                         out_features: int) -> WeightAdapter:
    """Build the weight adapter that ``cfg`` names for one linear layer."""
    cls = adapter_class(cfg)
    if not issubclass(cls, WeightAdapter):
        raise TypeError(
            f'{cls.__name__} is a token adapter; it goes on a token placement '
            '(pre / series / parallel / post), not on a linear weight.')
    return cls(in_features, out_features,
               **{k: v for k, v in cfg.items() if k != 'type'})


def check_token_map(x: torch.Tensor, hw_shape: Sequence[int]) -> None:
    """Raise if ``x`` (B, N, C) is not an H*W token map for ``hw_shape``."""
    if hw_shape is None or len(hw_shape) != 2:
        raise ValueError(
            f'hw_shape must be (H, W), got {hw_shape!r}. Spatial adapters '
            '(Mona) need the token map shape: call them as adapter(x, (H, W)).')
    h, w = hw_shape
    if x.dim() != 3 or x.shape[1] != h * w:
        raise ValueError(
            f'Adapter got tokens of shape {tuple(x.shape)} with hw_shape '
            f'({h}, {w}); it needs (B, H*W, C) = (B, {h * w}, C). Pass the '
            'unpadded (H, W) of the token map, and strip class tokens first.')


def iter_adapters(module: nn.Module) -> Iterator[Tuple[str, nn.Module]]:
    """Yield ``(name, adapter)`` for every adapter (token, weight or side
    network) in ``module``."""
    for name, child in module.named_modules():
        if isinstance(child, (Adapter, WeightAdapter, SideNetwork)):
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


def check_scale(name: str, value, owner: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0: a scale
    of 0 switches the adapter off silently, a negative one flips it."""
    if isinstance(value, bool) or not isinstance(
            value, (int, float)) or not 0 < value < float('inf'):
        raise ValueError(
            f'{owner}: {name} scales what the adapter adds and must be a '
            f'finite number > 0, got {value!r} (0 would switch the adapter '
            f'off); fix {name} in adapter_cfg.')


def check_flag(name: str, value, owner: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a bool (``'False'`` or 0
    would read as the opposite or pass unnoticed)."""
    if not isinstance(value, bool):
        raise ValueError(
            f'{owner}: {name} must be True or False, got {value!r}; fix '
            f'{name} in adapter_cfg.')


def check_dropout(value, owner: str, name: str = 'dropout') -> None:
    """Raise ``ValueError`` unless ``value`` is a drop probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(
            value, (int, float)) or not 0 <= value < 1:
        raise ValueError(
            f'{owner}: {name} is the probability of zeroing an activation and '
            f'must be in [0, 1), got {value!r}; fix {name} in '
            'adapter_cfg.')
