"""Stop a diverged run at the first non-finite loss, before it saves NaNs.

A NaN or inf loss poisons the weights at the optimizer step of that same
iteration, and every checkpoint after it. The hook runs after each training
iteration, before ``CheckpointHook`` (priority VERY_LOW), so the poisoned
state is never written; the error names the iteration, the loss terms that
broke and the last good checkpoint to resume from. Under DDP every rank
agrees (one all-reduce of a flag per iteration), so all ranks stop together
instead of the healthy ones hanging in the next collective.

Going back: mmengine restores the optimizer's learning rate from the
checkpoint on ``--resume``, so a lower ``optimizer.lr`` in the config (or in
``--cfg-options``) is silently ignored and the run diverges again.
:class:`ResumeLRHook` (``tools/train.py --resume CKPT --resume-lr LR``) sets
the learning rate after the checkpoint is loaded; the error of
:class:`NaNGuardHook` prints that command with a tenth of the current rate.

Which checkpoint is good to go back to: a run that diverges gradually saves
checkpoints while its loss grows, still finite; their weights are often too
far out for a lower learning rate to bring back. Every save records the loss
(in the checkpoint's ``meta['nan_guard']``) and is judged: it is *exploding*
when the mean of the last ``window`` losses is more than ``factor`` times the
run's healthy level, the lowest median of ``window`` consecutive losses seen
so far (in this run and the one it resumed). The median keeps the level
where most of a window was, so a window in which the loss takes off does not
raise it; the mean follows the growth. The *last good* checkpoint, the one
the error names, is the newest checkpoint whose save was not exploding.
Before ``window`` finite losses exist, and while the level is not positive
(a loss that can be zero or negative), every finite save counts as good.
Under DDP the judgement is rank 0's, from its own losses (it alone saves).
"""
import math
import os.path as osp
import statistics
from collections import deque
from typing import Deque, Dict, List, Optional, Tuple

import torch
from mmengine.dist import all_reduce
from mmengine.optim import OptimWrapperDict
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .param_table import unwrap_model


class NonFiniteLossError(FloatingPointError):
    """The training loss (or a weight about to be checkpointed) is NaN/inf."""


@HOOKS.register_module()
class NaNGuardHook(Hook):
    """Raise :class:`NonFiniteLossError` when the loss stops being finite,
    naming the last good checkpoint (see the module docstring).

    Args:
        patience: consecutive non-finite losses tolerated before stopping.
            1 (the default) stops at the first; raise it only for AMP runs
            whose dynamic loss scaler skips overflowing steps on purpose.
        check_checkpoint: also refuse to save a checkpoint whose trainable
            weights are not finite (weights can diverge while the loss of
            that iteration still looks finite).
        window: the losses a save is judged by (their mean) and the healthy
            level is measured over (the lowest median of that many).
        factor: a save is exploding when its mean loss is more than
            ``factor`` times the healthy level.
    """
    priority = 'ABOVE_NORMAL'

    def __init__(self, patience: int = 1, check_checkpoint: bool = True,
                 window: int = 10, factor: float = 4.0):
        if not (isinstance(patience, int) and patience >= 1):
            raise ValueError(f'NaNGuardHook: patience must be an integer >= '
                             f'1, got {patience!r}.')
        if not (isinstance(window, int) and window >= 1):
            raise ValueError(f'NaNGuardHook: window must be an integer >= '
                             f'1 (losses per judgement), got {window!r}.')
        if not (isinstance(factor, (int, float)) and 1 < factor < math.inf):
            raise ValueError(f'NaNGuardHook: factor must be a finite number '
                             f'> 1 (how far above the healthy loss level a '
                             f'save counts as exploding), got {factor!r}.')
        self.patience = patience
        self.check_checkpoint = check_checkpoint
        self.window = window
        self.factor = float(factor)
        self._bad_in_a_row = 0
        self._last_good: Optional[str] = None
        self._recent: Deque[float] = deque(maxlen=window)
        self._level: Optional[float] = None
        # Saves since the last good one: (path, mean loss).
        self._exploded: List[Tuple[str, float]] = []
        self._loaded: Optional[Tuple[int, dict]] = None
        self._judged: Optional[Tuple[str, dict]] = None  # last save, record

    def before_train(self, runner) -> None:
        """A resumed run starts from a good checkpoint: the one it loaded,
        or the one that checkpoint names if it was saved exploding; the
        losses it recorded carry on."""
        self._last_good = runner.message_hub.get_info('last_ckpt')
        if self._loaded is None or self._loaded[0] != runner.iter:
            return  # a fresh run (load_from only starts from the weights)
        record = self._loaded[1]
        self._recent.extend(record['recent'])
        self._level = record['level']
        if record['exploding']:
            self._last_good = record['last_good']
            self._exploded = [(runner.message_hub.get_info('last_ckpt'),
                               record['loss'])]

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta') or {}
        record = meta.get('nan_guard')
        self._loaded = None if record is None else (meta.get('iter'), record)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[Dict[str, torch.Tensor]] = None
                         ) -> None:
        if not outputs or 'loss' not in outputs:
            return
        loss = torch.as_tensor(outputs['loss']).detach().float()
        bad_here = bool((~torch.isfinite(loss)).any())
        bad = torch.tensor([float(bad_here)])
        all_reduce(bad, op='max')  # a no-op outside distributed runs
        if not bad.item():
            self._bad_in_a_row = 0
            self._record_loss(float(loss.mean()))
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
        images = batch_images(data_batch)
        where = ('this rank' if bad_here else
                 'another rank (this one was finite)')
        batch = (f' The batch of this rank: {", ".join(images)}.'
                 if images else '')
        raise NonFiniteLossError(
            f'Training diverged: the loss is not finite at iteration '
            f'{runner.iter + 1} (epoch {runner.epoch + 1}) on {where}; this '
            f'rank logged {terms}.{batch} The run stopped before saving this '
            f'state. {self._go_back(runner)} Or add gradient clipping '
            '(optim_wrapper.clip_grad=dict(max_norm=1.0)), or check the data '
            'of this iteration (an image whose annotation does not fit it).')

    def _record_loss(self, loss: float) -> None:
        """One more finite loss; the healthy level falls to the median of
        the last ``window`` losses when that is lower."""
        self._recent.append(loss)
        if len(self._recent) == self.window:
            median = statistics.median(self._recent)
            if self._level is None or median < self._level:
                self._level = median

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.check_checkpoint:
            self._check_weights(runner, checkpoint)
        # CheckpointHook names the file before writing it; a save under a
        # name already judged (a best checkpoint, which CheckpointHook does
        # not name) repeats that judgement.
        path = runner.message_hub.get_info('last_ckpt')
        if self._judged is not None and self._judged[0] == path:
            checkpoint.setdefault('meta', {})['nan_guard'] = self._judged[1]
            return
        loss = statistics.fmean(self._recent) if self._recent else None
        exploding = (len(self._recent) == self.window and self._level > 0
                     and loss > self.factor * self._level)
        if exploding:
            self._exploded.append((path, loss))
            back = (f'the checkpoint to go back to stays {self._last_good}'
                    if self._last_good else 'no earlier checkpoint is good')
            runner.logger.warning(
                f'NaNGuardHook: the loss is exploding: the mean of the last '
                f'{self.window} losses is {loss:.4g}, more than '
                f'{self.factor:g}x the healthy level {self._level:.4g}. '
                f'{path} is saved, but {back}.')
        else:
            self._last_good, self._exploded = path, []
        record = dict(loss=loss, level=self._level, exploding=exploding,
                      last_good=self._last_good, recent=list(self._recent))
        self._judged = (path, record)
        checkpoint.setdefault('meta', {})['nan_guard'] = record

    def _check_weights(self, runner, checkpoint: dict) -> None:
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
            return
        shown = ', '.join(broken[:5]) + (
            f', ... (+{len(broken) - 5} more)' if len(broken) > 5 else '')
        raise NonFiniteLossError(
            f'Training diverged: {len(broken)} trainable weights are not '
            f'finite at iteration {checkpoint["meta"].get("iter")} ({shown}); '
            f'the checkpoint was not written. {self._go_back(runner)} Or '
            'add gradient clipping (optim_wrapper.clip_grad=dict('
            'max_norm=1.0)).')

    def _go_back(self, runner) -> str:
        """Where to resume from, with a tenth of the current learning rate:
        the last good checkpoint."""
        lower = f'{max(current_lrs(runner.optim_wrapper), default=0) / 10:.3g}'
        if self._last_good is None:
            saved = ('No good checkpoint was saved before it (each one was '
                     'saved while the loss was exploding)' if self._exploded
                     else 'No checkpoint was saved before it')
            return (f'{saved}: restart from scratch with a lower learning '
                    f'rate (optim_wrapper.optimizer.lr={lower}, a tenth of '
                    'the current one).')
        if '://' not in self._last_good and not osp.exists(self._last_good):
            return (f'The last good checkpoint, {self._last_good}, was '
                    'deleted (CheckpointHook max_keep_ckpts removes the oldest '
                    'ones); the checkpoints after it were saved while the loss '
                    'was exploding: restart from scratch with a lower learning '
                    f'rate (optim_wrapper.optimizer.lr={lower}, a tenth of the '
                    'current one), and keep more checkpoints.')
        advice = (f'Go back to the last good checkpoint with a tenth of the '
                  f'current learning rate: tools/train.py CONFIG --resume '
                  f'{self._last_good} --resume-lr {lower} (without tools/'
                  f"train.py: custom_hooks += [dict(type='ResumeLRHook', "
                  f"lr={lower})], resume=True, load_from='{self._last_good}'; "
                  'a lower optimizer.lr in the config is not enough, the '
                  'checkpoint restores its own).')
        if self._exploded:
            later = ', '.join(f'{osp.basename(path)} ({loss:.3g})'
                              for path, loss in self._exploded)
            advice += (f' The checkpoints saved after it were saved while the '
                       f'loss was exploding (mean of the last {self.window} '
                       f'losses, more than {self.factor:g}x the healthy level '
                       f'{self._level:.3g}): {later}; a lower learning '
                       'rate seldom brings such weights back.')
        return advice


@HOOKS.register_module()
class ResumeLRHook(Hook):
    """Set the learning rate of a resumed run, after the checkpoint restored
    its own (which overrides the config's ``optimizer.lr``).

    Every param group's learning rate is scaled by one factor, so that the
    largest becomes ``lr``: ``paramwise_cfg`` multipliers keep their ratios.
    The ``param_scheduler``s' base and last values and their absolute
    ``eta_min`` scale with it, so the rest of the schedule (warm-up, cosine,
    steps) keeps its shape at the new scale.

    Args:
        lr: the largest learning rate from the first resumed iteration on.
    """
    priority = 'VERY_HIGH'

    def __init__(self, lr: float):
        if not (isinstance(lr, (int, float)) and 0 < lr < math.inf):
            raise ValueError(f'ResumeLRHook: lr must be a positive finite '
                             f'number, got {lr!r}.')
        self.lr = float(lr)

    def before_train(self, runner) -> None:
        """After ``load_or_resume``: the optimizer and schedulers hold the
        checkpoint's state now."""
        old = max(current_lrs(runner.optim_wrapper), default=0)
        if old <= 0:
            raise ValueError('ResumeLRHook: the optimizer has no positive '
                             'learning rate to scale.')
        factor = self.lr / old
        for optimizer in _optimizers(runner.optim_wrapper):
            for group in optimizer.param_groups:
                for key in ('lr', 'initial_lr'):
                    if key in group:
                        group[key] *= factor
        schedulers = runner.param_schedulers or []
        if isinstance(schedulers, dict):
            schedulers = [s for group in schedulers.values() for s in group]
        for scheduler in schedulers:
            if getattr(scheduler, 'param_name', None) != 'lr':
                continue
            scheduler.base_values = [v * factor
                                     for v in scheduler.base_values]
            if getattr(scheduler, '_last_value', None) is not None:
                scheduler._last_value = [
                    v * factor for v in scheduler._last_value]
            if getattr(scheduler, 'eta_min', None):
                scheduler.eta_min *= factor
        runner.logger.info(
            f'ResumeLRHook: learning rate {old:.4g} -> {self.lr:.4g} (every '
            f'param group scaled by {factor:.4g}).')


def current_lrs(optim_wrapper) -> List[float]:
    """The learning rate of every param group of an OptimWrapper(Dict)."""
    return [group['lr'] for optimizer in _optimizers(optim_wrapper)
            for group in optimizer.param_groups if 'lr' in group]


def _optimizers(optim_wrapper):
    wrappers = (optim_wrapper.values()
                if isinstance(optim_wrapper, OptimWrapperDict) else
                [optim_wrapper])
    return [w.optimizer for w in wrappers]


def batch_images(data_batch) -> List[str]:
    """The ``img_path`` of every data sample of a batch (mmdet, mmseg and
    mmrotate samples carry it in their metainfo)."""
    samples = data_batch.get('data_samples') if isinstance(
        data_batch, dict) else None
    names = []
    for sample in samples or []:
        metainfo = getattr(sample, 'metainfo', None)
        if metainfo is None and isinstance(sample, dict):
            metainfo = sample
        path = (metainfo or {}).get('img_path')
        if path is not None:
            names.append(str(path))
    return names


def _scalar(value) -> str:
    if torch.is_tensor(value) and value.numel() == 1:
        value = value.item()
    return f'{value:.4g}' if isinstance(value, float) and math.isfinite(
        value) else str(value)

