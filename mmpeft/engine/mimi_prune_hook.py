"""MiMi's iterative global pruning of adapter neurons, as an mmengine hook.

Every ``interval`` epochs (or iterations) one round scores every live hidden
neuron of every :class:`~mmpeft.adapters.MiMiAdapter` in the model and
switches off the lowest ``rho`` fraction of them, ranked GLOBALLY across
adapters (the score is normalised per neuron, so adapters of different widths
compare), until the compression reaches ``sigma_target``.

Compression, precisely: with C_j the token width and w_j the live neurons of
adapter j, ``sigma = sum_j C_j / sum_j w_j`` -- the uniform ``C / hidden``
ratio that leaves the same total number of hidden neurons. A MiMiSwin starts
at ``sigma = sigma0``; each round multiplies it by about ``1 / (1 - rho)``.
The number of live neurons after each round is fixed in advance (remove
``max(1, round(rho * live))``, the last round only down to
``floor(sum C / sigma_target)``), so the rounds needed are known before
training, checked against the schedule, and the run ends with
``sigma >= sigma_target`` exactly at the planned round.

Shapes never change during training: neurons are masked (weights and their
AdamW moments zeroed, zero gradients through the mask), so DDP and the
optimizer keep working and a checkpoint resumes as is. Under DDP rank 0
ranks the neurons and broadcasts the new masks; every rank applies them.
"""
import json
import math
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.dist import broadcast, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

from ..adapters import MiMiAdapter


@HOOKS.register_module()
class MiMiPruneHook(Hook):
    """Prune MiMi adapters during training.

    Args:
        sigma_target: compression to reach (see the module docstring); must
            exceed the model's starting compression (``sigma0``).
        rho: fraction of the live neurons removed per round (paper: 0.5).
        interval: epochs (``by_epoch``) or iterations between rounds; the
            first round comes after ``interval`` of training.
        by_epoch: count ``interval`` in epochs (epoch-based loops only) or
            in iterations (any loop).
        log_file: JSON lines file in the work dir, one record per round
            (round 0 = before pruning); ``tools/plot_mimi.py`` reads it.
    """
    # Runs before CheckpointHook (VERY_LOW): the checkpoint saved at a
    # round's epoch/iteration already holds that round's masks.
    priority = 'NORMAL'

    def __init__(self,
                 sigma_target: float,
                 rho: float = 0.5,
                 interval: int = 1,
                 by_epoch: bool = True,
                 log_file: str = 'mimi_prune.jsonl'):
        if not (isinstance(sigma_target, (int, float))
                and 1 < sigma_target < math.inf):
            raise ValueError(
                f'MiMiPruneHook: sigma_target must be a finite number > 1 '
                f'(sum of adapter input widths / live neurons), got '
                f'{sigma_target!r}.')
        if not 0 < rho < 1:
            raise ValueError(
                f'MiMiPruneHook: rho is the fraction of live neurons removed '
                f'per round and must be in (0, 1), got {rho!r} (paper: 0.5).')
        if not (isinstance(interval, int) and interval >= 1):
            raise ValueError(f'MiMiPruneHook: interval must be an integer '
                             f'>= 1, got {interval!r}.')
        self.sigma_target = float(sigma_target)
        self.rho = rho
        self.interval = interval
        self.by_epoch = by_epoch
        self.log_file = log_file
        self.round = 0
        self._resumed_round: Optional[int] = None
        self._adapters: List[Tuple[str, MiMiAdapter]] = []
        self._schedule: List[int] = []

    # ------------------------------------------------------------------ plan
    def plan(self, in_dims: List[int], start_widths: List[int]) -> List[int]:
        """Total live neurons before round 1, after round 1, ..., last."""
        total_in = sum(in_dims)
        start = sum(start_widths)
        final = math.floor(total_in / self.sigma_target)
        if final < 1:
            raise ValueError(
                f'MiMiPruneHook: sigma_target={self.sigma_target} would '
                f'remove every neuron: the adapters have {total_in} input '
                f'channels in all, so the largest compression with one '
                f'neuron left is {total_in}. Lower sigma_target.')
        if final >= start:
            raise ValueError(
                f'MiMiPruneHook: sigma_target={self.sigma_target} is already '
                f'met before pruning (compression {total_in / start:.3g} with '
                f'{start} neurons): raise sigma_target above sigma0, or drop '
                'the hook to train fixed-size adapters.')
        schedule = [start]
        while schedule[-1] > final:
            live = schedule[-1]
            schedule.append(max(final, live - max(1, round(self.rho * live))))
        return schedule

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        self._adapters = [(name, module)
                          for name, module in model.named_modules()
                          if isinstance(module, MiMiAdapter)]
        if not self._adapters:
            raise RuntimeError(
                'MiMiPruneHook found no MiMiAdapter in the model: use a MiMi '
                "backbone (type='MiMiSwin') or remove the hook.")
        if self.by_epoch and isinstance(runner.train_loop, IterBasedTrainLoop):
            raise ValueError(
                'MiMiPruneHook(by_epoch=True) cannot count its interval in '
                'epochs in an IterBasedTrainLoop: set by_epoch=False and '
                'give the interval in iterations.')
        self._schedule = self.plan(
            [a.in_dim for _, a in self._adapters],
            [a.hidden_dim for _, a in self._adapters])
        live = sum(a.width for _, a in self._adapters)
        if live not in self._schedule:
            raise RuntimeError(
                f'MiMiPruneHook: the model has {live} live adapter neurons, '
                f'which is no step of the plan {self._schedule} for '
                f'rho={self.rho}, sigma_target={self.sigma_target}. A resumed '
                'run must keep the rho and sigma_target it was pruned with.')
        self.round = self._schedule.index(live)
        if self._resumed_round not in (None, self.round):
            raise RuntimeError(
                f'MiMiPruneHook: the checkpoint says {self._resumed_round} '
                f'rounds were done but its masks match round {self.round}.')
        self._check_schedule_fits(runner)
        if self.round == 0:
            self._report(runner, runner.epoch, runner.iter)

    def _check_schedule_fits(self, runner) -> None:
        unit = 'epochs' if self.by_epoch else 'iterations'
        done = runner.epoch if self.by_epoch else runner.iter
        total = runner.max_epochs if self.by_epoch else runner.max_iters
        rounds_left = len(self._schedule) - 1 - self.round
        points_left = total // self.interval - done // self.interval
        if rounds_left > points_left:
            raise ValueError(
                f'MiMiPruneHook: reaching sigma_target={self.sigma_target} '
                f'with rho={self.rho} takes {len(self._schedule) - 1} rounds '
                f'(live neurons {self._schedule}), {rounds_left} still to '
                f'do, but one round every {self.interval} {unit} fits only '
                f'{points_left} more in {total} {unit}. Lower interval or '
                'sigma_target, raise rho, or train longer.')

    # --------------------------------------------------------------- rounds
    def after_train_epoch(self, runner) -> None:
        if self.by_epoch and self.every_n_epochs(runner, self.interval):
            self._prune_round(runner, runner.epoch + 1, runner.iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if not self.by_epoch and self.every_n_train_iters(
                runner, self.interval):
            self._prune_round(runner, runner.epoch, runner.iter + 1)

    def _prune_round(self, runner, epochs_done: int, iters_done: int) -> None:
        if self.round + 1 >= len(self._schedule):
            return
        masks = self._select_masks(self._schedule[self.round + 1])
        sizes = [a.hidden_dim for _, a in self._adapters]
        for (_, adapter), mask in zip(self._adapters, masks.split(sizes)):
            adapter.set_mask(mask)
        self._clear_optimizer_state(runner)
        self.round += 1
        self._report(runner, epochs_done, iters_done)

    def _select_masks(self, live_after: int) -> torch.Tensor:
        """Rank 0 chooses (from its weights), every rank receives its masks."""
        adapters = [a for _, a in self._adapters]
        if is_main_process():
            masks = global_prune_masks(adapters, live_after)
        else:
            masks = torch.cat([a.neuron_mask for a in adapters])
        broadcast(masks, src=0)
        return masks

    def _clear_optimizer_state(self, runner) -> None:
        """Zero the masked entries of every per-parameter optimizer tensor
        (AdamW exp_avg / exp_avg_sq, SGD momentum, ...), so nothing can move
        a pruned weight again."""
        wrapper = runner.optim_wrapper
        wrappers = (wrapper.values() if isinstance(wrapper, OptimWrapperDict)
                    else [wrapper])
        for optimizer in (w.optimizer for w in wrappers):
            for _, adapter in self._adapters:
                dead = (adapter.neuron_mask == 0).nonzero().flatten()
                for param, axis in adapter.neuron_axes():
                    for value in optimizer.state.get(param, {}).values():
                        if torch.is_tensor(value) and value.shape == param.shape:
                            value.index_fill_(axis, dead, 0.0)

    # ------------------------------------------------------------ reporting
    def summary(self) -> dict:
        """Widths and compression now; saved in checkpoints as meta['mimi']."""
        widths = [a.width for _, a in self._adapters]
        return dict(
            round=self.round,
            rounds=len(self._schedule) - 1,
            compression=sum(a.in_dim for _, a in self._adapters) /
            max(sum(widths), 1),
            sigma_target=self.sigma_target,
            rho=self.rho,
            names=[name for name, _ in self._adapters],
            in_dims=[a.in_dim for _, a in self._adapters],
            initial_widths=[a.hidden_dim for _, a in self._adapters],
            widths=widths)

    def _report(self, runner, epochs_done: int, iters_done: int) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        pruned = sum(
            p.numel() for _, a in self._adapters for p in a.parameters()
        ) - sum(a.num_active_params() for _, a in self._adapters)
        record = dict(
            self.summary(),
            epoch=epochs_done,
            iter=iters_done,
            adapter_params=sum(a.num_active_params()
                               for _, a in self._adapters),
            trainable_params=sum(p.numel() for p in model.parameters()
                                 if p.requires_grad) - pruned)
        runner.message_hub.update_info('mimi', record)
        runner.logger.info(
            f'MiMi round {record["round"]}/{record["rounds"]}: compression '
            f'{record["compression"]:.2f} (target {self.sigma_target}), '
            f'{sum(record["widths"])} neurons, adapter params '
            f'{record["adapter_params"]:,}, trainable params '
            f'{record["trainable_params"]:,}; widths per adapter: '
            f'{record["widths"]}')
        if is_main_process():
            with open(osp.join(runner.work_dir, self.log_file), 'a') as f:
                f.write(json.dumps(record) + '\n')

    # ---------------------------------------------------------- checkpoints
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._adapters:
            checkpoint.setdefault('meta', {})['mimi'] = self.summary()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Remember the round the checkpoint recorded; ``before_train``
        checks it against the loaded masks, which define the state."""
        mimi = checkpoint.get('meta', {}).get('mimi')
        self._resumed_round = None if mimi is None else mimi['round']


def global_prune_masks(adapters: Sequence[MiMiAdapter],
                       live_after: int) -> torch.Tensor:
    """New masks of ``adapters``, concatenated in order: the ``live_after``
    best-scored live neurons over all adapters stay on (ties go to the
    neuron first in adapter order), whichever adapters they are in."""
    masks = torch.cat([a.neuron_mask for a in adapters]).clone()
    live = masks.nonzero().flatten()
    if not 0 <= live_after <= live.numel():
        raise ValueError(f'cannot keep {live_after} of {live.numel()} live '
                         'neurons')
    scores = torch.cat([a.importance() for a in adapters]).to(masks.device)
    ranked = torch.sort(scores[live], stable=True).indices
    masks[live[ranked[:live.numel() - live_after]]] = 0
    return masks
