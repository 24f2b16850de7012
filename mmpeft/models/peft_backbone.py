"""What every mmpeft backbone shares, whatever its adapters and its host.

A PEFT backbone is a stock mm backbone plus adapter slots. This mixin owns the
rest of the contract: pretrained weights are frozen, adapters train, a
pretrained checkpoint that leaves a frozen weight unloaded is an error (a
frozen random weight is a silent disaster), adapters keep their official init,
and ``merge_adapters`` turns the model into its deploy form.
"""
from contextlib import contextmanager
from typing import Dict, Iterator, List, Sequence, Set, Tuple

import torch
from mmengine.logging import MMLogger
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..adapters import build_adapter, iter_adapters


class PretrainedMismatchError(RuntimeError):
    """The pretrained checkpoint does not cover the frozen backbone weights."""


def call_adapter(adapter: nn.Module, x: torch.Tensor,
                 hw_shape: Sequence[int], recompute: bool) -> torch.Tensor:
    """``adapter(x, hw_shape)``; with ``recompute`` (training only), keep just
    the adapter's input for backward and recompute its internals there.

    The input is kept by the host block anyway, so what the adapter would
    save (for Mona: norms, gamma products, conv maps, GELU input, dropout
    mask) costs no memory. Non-reentrant checkpointing replays the RNG
    state: dropout masks, and so the gradients, are those of the plain
    forward.
    """
    if recompute and torch.is_grad_enabled():
        return checkpoint(adapter, x, hw_shape, use_reentrant=False)
    return adapter(x, hw_shape)


class PEFTBackboneMixin:
    """Mix in before the stock backbone class: ``class X(PEFTBackboneMixin, Stock)``.

    Subclasses call :meth:`build_slot_adapter` for each slot in ``__init__``
    and :meth:`freeze_pretrained` once the adapters exist.
    """

    def build_slot_adapter(self, in_dim: int) -> nn.Module:
        """The adapter for one slot with tokens of width ``in_dim``."""
        return build_adapter(self.adapter_cfg, in_dim)

    def named_adapters(self) -> Iterator[Tuple[str, nn.Module]]:
        return iter_adapters(self)

    def adapter_param_names(self) -> List[str]:
        prefixes = tuple(f'{name}.' for name, _ in self.named_adapters())
        return [n for n, _ in self.named_parameters() if n.startswith(prefixes)]

    def freeze_pretrained(self) -> None:
        """requires_grad False for every weight that is not in an adapter."""
        trainable = set(self.adapter_param_names())
        for name, param in self.named_parameters():
            param.requires_grad = name in trainable

    def init_weights(self) -> None:
        """Stock init / pretrained loading, then two guarantees: every frozen
        weight came from the checkpoint (if one is configured), and adapters
        the checkpoint did not provide get their official init."""
        logger = MMLogger.get_current_instance()
        with self._record_loaded_state() as loaded:
            self._load_pretrained()
        pretrained = self._pretrained_path()
        if pretrained is not None:
            self._check_frozen_weights_loaded(loaded, pretrained)
        else:
            logger.warning(
                f'{type(self).__name__}: no pretrained checkpoint configured; '
                'the frozen backbone weights are random. Set init_cfg='
                "dict(type='Pretrained', checkpoint=...) for real fine-tuning.")
        for name, adapter in self.named_adapters():
            if not any(k.startswith(f'{name}.') for k in loaded):
                adapter.reset_parameters()

    def _load_pretrained(self) -> None:
        """The stock ``init_weights``; hosts override to add context to errors."""
        super().init_weights()

    def _pretrained_path(self):
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') in ('Pretrained',
                                                          'Pretrained_Part'):
            return cfg.get('checkpoint')
        return None

    @contextmanager
    def _record_loaded_state(self) -> Iterator[Dict[str, torch.Size]]:
        """Collect the keys and shapes of state dicts loaded into ``self``."""
        loaded: Dict[str, torch.Size] = {}

        def record(module, state_dict, prefix, *args):
            for key, value in state_dict.items():
                if key.startswith(prefix) and hasattr(value, 'shape'):
                    loaded[key[len(prefix):]] = value.shape

        handle = self._register_load_state_dict_pre_hook(record, with_module=True)
        try:
            yield loaded
        finally:
            handle.remove()

    def _weights_not_in_pretrained(self) -> Set[str]:
        """Frozen weights that the host's pretrained checkpoints do not have
        by design; they keep their init. None by default."""
        return set()

    def _check_frozen_weights_loaded(self, loaded: Dict[str, torch.Size],
                                     checkpoint: str) -> None:
        exempt = set(self.adapter_param_names()) | \
            self._weights_not_in_pretrained()
        frozen = {
            name: param.shape
            for name, param in self.named_parameters() if name not in exempt
        }
        missing = sorted(k for k in frozen if k not in loaded)
        mismatched = sorted(f'{k}: checkpoint {tuple(loaded[k])} vs model '
                            f'{tuple(frozen[k])}' for k in frozen
                            if k in loaded and loaded[k] != frozen[k])
        if missing or mismatched:
            raise PretrainedMismatchError(
                f'{type(self).__name__}: the pretrained checkpoint {checkpoint!r} '
                f'leaves {len(missing) + len(mismatched)} of {len(frozen)} '
                'frozen backbone weights unloaded; they would stay random and '
                'never train.\n'
                f'  missing ({len(missing)}): {_preview(missing)}\n'
                f'  wrong shape ({len(mismatched)}): {_preview(mismatched)}\n'
                'Fix: use a checkpoint of this architecture (embed_dims, depths, '
                'patch size), check its key prefix, and for official releases '
                'set the converter flag (Swin: convert_weights=True).')
        unexpected = sorted(k for k in loaded if k not in dict(
            self.named_parameters()) and k not in dict(self.named_buffers()))
        if unexpected:
            MMLogger.get_current_instance().warning(
                f'{type(self).__name__}: {len(unexpected)} checkpoint keys have '
                f'no place in the backbone and were ignored: {_preview(unexpected)}')

    def merge_adapters(self) -> nn.Module:
        """Deploy form: each adapter simplifies itself where it can.

        Backbones whose adapters fold into host layers override this."""
        for _, adapter in list(self.named_adapters()):
            if hasattr(adapter, 'deploy'):
                adapter.deploy()
        return self


def _preview(keys: List[str], limit: int = 8) -> str:
    shown = ', '.join(keys[:limit])
    return shown + (f', ... (+{len(keys) - limit} more)' if len(keys) > limit
                    else '') if keys else '-'


def merge_adapters(model: nn.Module) -> nn.Module:
    """Turn every PEFT backbone inside ``model`` into its deploy form, in place."""
    for module in list(model.modules()):
        if isinstance(module, PEFTBackboneMixin):
            module.merge_adapters()
    return model
