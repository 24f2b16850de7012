"""Stop a diverged run at the first non-finite loss, before it saves NaNs.

A NaN or inf loss poisons the weights at the optimizer step of that same
iteration, and every checkpoint after it. The hook runs after each training
iteration, before ``CheckpointHook`` (priority VERY_LOW), so the poisoned
state is never written; the error names the iteration, the loss terms that
broke and the last good checkpoint to resume from. Under DDP every rank
agrees (one all-reduce of a flag per iteration), so all ranks stop together
instead of the healthy ones hanging in the next collective.
"""
import math
from typing import Dict, Optional

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .param_table import unwrap_model


class NonFiniteLossError(FloatingPointError):
    """The training loss (or a weight about to be checkpointed) is NaN/inf."""


@HOOKS.register_module()
class NaNGuardHook(Hook):
    """Raise :class:`NonFiniteLossError` when the loss stops being finite.

    Args:
        patience: consecutive non-finite losses tolerated before stopping.
            1 (the default) stops at the first; raise it only for AMP runs
            whose dynamic loss scaler skips overflowing steps on purpose.
        check_checkpoint: also refuse to save a checkpoint whose trainable
            weights are not finite (weights can diverge while the loss of
            that iteration still looks finite).
    """
    priority = 'ABOVE_NORMAL'

    def __init__(self, patience: int = 1, check_checkpoint: bool = True):
        if not (isinstance(patience, int) and patience >= 1):
            raise ValueError(f'NaNGuardHook: patience must be an integer >= '
                             f'1, got {patience!r}.')
        self.patience = patience
        self.check_checkpoint = check_checkpoint
        self._bad_in_a_row = 0
        self._last_good: Optional[str] = None

    def before_train(self, runner) -> None:
        """A resumed run starts from a good checkpoint: the one it loaded."""
        self._last_good = runner.message_hub.get_info('last_ckpt')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[Dict[str, torch.Tensor]] = None
                         ) -> None:
        if not outputs or 'loss' not in outputs:
            return
        loss = torch.as_tensor(outputs['loss']).detach().float()
        bad = (~torch.isfinite(loss)).any().float().reshape(1).cpu()
        all_reduce(bad, op='max')  # a no-op outside distributed runs
        if not bad.item():
            self._bad_in_a_row = 0
            return
        self._bad_in_a_row += 1
        if self._bad_in_a_row < self.patience:
            runner.logger.warning(
                f'NaNGuardHook: non-finite loss at iteration '
                f'{runner.iter + 1} ({self._bad_in_a_row}/{self.patience} '
                'tolerated).')
            return
        terms = ', '.join(f'{name}={_scalar(value)}'
                          for name, value in outputs.items())
        raise NonFiniteLossError(
            f'Training diverged: the loss is not finite at iteration '
            f'{runner.iter + 1} (epoch {runner.epoch + 1}) on at least one '
            f'rank; this rank logged {terms}. The run stopped before saving '
            f'this state. {self._go_back()} Before resuming, lower the '
            'learning rate (optim_wrapper.optimizer.lr), add gradient '
            'clipping (optim_wrapper.clip_grad=dict(max_norm=1.0)), or check '
            'the data of this iteration.')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.check_checkpoint:
            return
        trainable = {
            name
            for name, param in unwrap_model(runner.model).named_parameters()
            if param.requires_grad
        }
        broken = [
            name for name, value in checkpoint.get('state_dict', {}).items()
            if name in trainable and torch.is_floating_point(value)
            and not torch.isfinite(value).all()
        ]
        if not broken:
            # CheckpointHook names the file before writing it.
            self._last_good = runner.message_hub.get_info('last_ckpt')
            return
        shown = ', '.join(broken[:5]) + (
            f', ... (+{len(broken) - 5} more)' if len(broken) > 5 else '')
        raise NonFiniteLossError(
            f'Training diverged: {len(broken)} trainable weights are not '
            f'finite at iteration {checkpoint["meta"].get("iter")} ({shown}); '
            f'the checkpoint was not written. {self._go_back()} Before '
            'resuming, lower the learning rate or add gradient clipping '
            '(optim_wrapper.clip_grad=dict(max_norm=1.0)).')

    def _go_back(self) -> str:
        """Where to resume from: the last checkpoint that passed the check."""
        if self._last_good is None:
            return ('No checkpoint was saved before it, so restart from '
                    'scratch (or from load_from).')
        return (f'Go back to the last good checkpoint {self._last_good}: '
                f'tools/train.py CONFIG --resume {self._last_good}.')


def _scalar(value) -> str:
    if torch.is_tensor(value) and value.numel() == 1:
        value = value.item()
    return f'{value:.4g}' if isinstance(value, float) and math.isfinite(
        value) else str(value)

