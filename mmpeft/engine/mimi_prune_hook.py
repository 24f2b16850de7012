"""MiMi's iterative global pruning of adapter neurons, as an mmengine hook.

A pruning round scores every hidden neuron of every
:class:`~mmpeft.adapters.MiMiAdapter` in the model and switches off the
lowest-scored ones, ranked GLOBALLY across adapters (the score is normalised
per neuron, so adapters of different widths compare). Two schedules:

``schedule='rounds'`` -- the official structure (IemProg/MiMi,
``few_shot_prune.py``, ``--prune_type layerwise``): the run is ``rounds``
rounds, each one full training schedule of ``round_iters`` iterations or
``round_epochs`` epochs whose learning-rate schedule RESTARTS (every param
scheduler of the runner replays its curve from step 0: warm-up, cosine, ...),
followed by a prune. After round k, ``floor(N * (1 - rho) ** k)`` neurons
survive, N the initial neurons of all adapters (the official cumulative
``amount``, computed as it is there); every neuron scoring at least the
score of the last survivor stays, so ties may keep a few more. Like the
official loop, the last round ends with a prune that no training follows.
The official run (``--range 4 --prune_amount 0.5``): 4 rounds, N -> N/2 ->
N/4 -> N/8 -> N/16. The official loop's one stopping rule (stop once no
neuron is left) becomes a check before training: a plan that empties every
adapter is refused.

``schedule='within'`` (the default, mmpeft's variant) -- one training
schedule, a round every ``interval`` epochs (or iterations), until the
compression reaches ``sigma_target``. Compression: with C_j the token width
and w_j the live neurons of adapter j, ``sigma = sum_j C_j / sum_j w_j``.
Each round removes exactly ``max(1, round(rho * live))`` neurons (ties go to
the neuron first in adapter order; the last round only down to
``floor(sum C / sigma_target)``), so the rounds needed are known before
training, checked against the schedule, and the run ends with
``sigma >= sigma_target`` exactly at the planned round. It costs one
schedule instead of ``rounds``, and the model trains after its last prune.

``weighted=True`` (official ``--weighted 1``, off in the official run script)
divides each adapter's scores by its best score before the global ranking,
so every adapter keeps at least its best neuron while it has a live one.

Shapes never change during training: neurons are masked (weights and their
AdamW moments zeroed, zero gradients through the mask), so DDP and the
optimizer keep working and a checkpoint resumes as is, mid-round included.
Under DDP rank 0 ranks the neurons and broadcasts the new masks; every rank
applies them (and restarts its schedulers the same way).

The parts live in :mod:`mmpeft.engine.mimi`: :mod:`~.mimi.plan` (the
schedules' arguments, the plan of live neurons, whether a run fits it),
:mod:`~.mimi.scoring` (neuron scores and the two selection rules),
:mod:`~.mimi.surgery` (masks applied, optimizer state zeroed) and
:mod:`~.mimi.schedulers` (the restarted learning-rate schedule); this
module decides when a round happens and where a resumed run stands.
"""
import json
import os.path as osp
from typing import List, Optional, Tuple

import torch
from mmengine.dist import broadcast, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

from ..adapters import MiMiAdapter
from .mimi.plan import (SCHEDULES, check_checkpoint_round,
                        check_rounds_loop, check_rounds_masks,
                        check_within_fits, official_plan, rounds_args,
                        rounds_done, within_args, within_plan, within_round)
from .mimi.schedulers import check_restartable, restart_param_schedulers
from .mimi.scoring import (global_prune_masks, neuron_scores,
                           official_prune_masks)
from .mimi.surgery import apply_masks, clear_optimizer_state

# The pure parts stay importable from here (mmpeft/methods.py, tools, tests).
__all__ = [
    'MiMiPruneHook', 'SCHEDULES', 'global_prune_masks', 'neuron_scores',
    'official_plan', 'official_prune_masks', 'restart_param_schedulers'
]


@HOOKS.register_module()
class MiMiPruneHook(Hook):
    """Prune MiMi adapters during training (see the module docstring).

    Args:
        schedule: ``'within'`` (default) or ``'rounds'`` (official).
        rho: fraction removed per round (paper and official run: 0.5); of
            the live neurons (``within``) or, cumulatively, of the initial
            ones (``rounds``: ``floor(N (1 - rho)^k)`` left after round k).
        weighted: per-adapter score normalisation (official ``--weighted``).
        log_file: JSON lines file in the work dir, one record per round
            (round 0 = before pruning); ``tools/plot_mimi.py`` reads it.

    ``schedule='within'`` only:
        sigma_target: compression to reach; must exceed the model's
            starting compression (``sigma0``).
        interval: epochs (``by_epoch``) or iterations between rounds
            (default 1); the first round comes after ``interval`` of training.
        by_epoch: count ``interval`` in epochs (epoch-based loops only, the
            default) or in iterations (any loop).

    ``schedule='rounds'`` only:
        rounds: number of training rounds, each followed by a prune
            (official ``--range``; the run script uses 4).
        round_iters / round_epochs: the length of one round (give one); the
            training loop must be ``rounds`` times as long and every param
            scheduler describes ONE round (its ``begin`` inside it).
    """
    # Runs before CheckpointHook (VERY_LOW): the checkpoint saved at a
    # round's epoch/iteration already holds that round's masks.
    priority = 'NORMAL'

    def __init__(self,
                 sigma_target: Optional[float] = None,
                 rho: float = 0.5,
                 interval: Optional[int] = None,
                 by_epoch: Optional[bool] = None,
                 schedule: str = 'within',
                 rounds: Optional[int] = None,
                 round_iters: Optional[int] = None,
                 round_epochs: Optional[int] = None,
                 weighted: bool = False,
                 log_file: str = 'mimi_prune.jsonl'):
        if schedule not in SCHEDULES:
            raise ValueError(
                f'MiMiPruneHook: schedule must be one of {SCHEDULES} '
                "('rounds': the official restarted schedules, 'within': "
                f'rounds inside one schedule), got {schedule!r}.')
        if not 0 < rho < 1:
            raise ValueError(
                f'MiMiPruneHook: rho is the fraction of neurons removed per '
                f'round and must be in (0, 1), got {rho!r} (paper: 0.5).')
        self.schedule = schedule
        self.rho = rho
        self.weighted = bool(weighted)
        self.log_file = log_file
        args = (sigma_target, interval, by_epoch, rounds, round_iters,
                round_epochs)
        if schedule == 'within':
            self.sigma_target, self.interval, self.by_epoch = within_args(
                *args)
            self.rounds = None
        else:
            self.rounds, self.interval, self.by_epoch = rounds_args(*args)
            self.sigma_target = None
        self.round = 0
        self._resumed_round: Optional[int] = None
        self._adapters: List[Tuple[str, MiMiAdapter]] = []
        self._schedule: List[int] = []

    def plan(self, in_dims: List[int], start_widths: List[int]) -> List[int]:
        """Live neurons planned before round 1, after round 1, ..., last
        (for ``rounds``: the survivors the official count asks for)."""
        if self.schedule == 'rounds':
            return official_plan(sum(start_widths), self.rho, self.rounds)
        return within_plan(in_dims, start_widths, self.rho, self.sigma_target)

    # ------------------------------------------- where the run stands
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
                'MiMiPruneHook cannot count rounds in epochs in an '
                'IterBasedTrainLoop: set by_epoch=False and give the interval '
                "in iterations (schedule='rounds': round_iters).")
        self._schedule = self.plan(
            [a.in_dim for _, a in self._adapters],
            [a.hidden_dim for _, a in self._adapters])
        live = sum(a.width for _, a in self._adapters)
        done = runner.epoch if self.by_epoch else runner.iter
        total = runner.max_epochs if self.by_epoch else runner.max_iters
        if self.schedule == 'rounds':
            check_rounds_loop(self._schedule, self.rounds, self.interval,
                              self.by_epoch, total, self.rho)
            check_restartable(runner, self.interval, self.by_epoch)
            self.round = rounds_done(done, self.interval, self.rounds)
            check_rounds_masks(self._schedule, self.round, live)
        else:
            self.round = within_round(self._schedule, live, self.rho,
                                      self.sigma_target)
            check_within_fits(self._schedule, self.round, self.interval,
                              self.by_epoch, done, total, self.sigma_target,
                              self.rho)
        check_checkpoint_round(self._resumed_round, self.round)
        if self.round == 0:
            self._report(runner, runner.epoch, runner.iter)

    # ---------------------------------------- 'rounds': restart the lr
    def before_train_epoch(self, runner) -> None:
        if (self.schedule == 'rounds' and self.by_epoch
                and 0 < runner.epoch < runner.max_epochs
                and runner.epoch % self.interval == 0):
            restart_param_schedulers(runner)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        if (self.schedule == 'rounds' and not self.by_epoch
                and 0 < runner.iter < runner.max_iters
                and runner.iter % self.interval == 0):
            restart_param_schedulers(runner)

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
        adapters = [a for _, a in self._adapters]
        apply_masks(adapters, masks)
        clear_optimizer_state(runner.optim_wrapper, adapters)
        self.round += 1
        self._report(runner, epochs_done, iters_done)

    def _select_masks(self, survivors: int) -> torch.Tensor:
        """Rank 0 chooses (from its weights), every rank receives its masks."""
        adapters = [a for _, a in self._adapters]
        if is_main_process():
            select = (official_prune_masks if self.schedule == 'rounds' else
                      global_prune_masks)
            masks = select(adapters, survivors, weighted=self.weighted)
        else:
            masks = torch.cat([a.neuron_mask for a in adapters])
        broadcast(masks, src=0)
        return masks

    # ------------------------------------------------------------ reporting
    def summary(self) -> dict:
        """Widths and compression now; saved in checkpoints as meta['mimi']."""
        widths = [a.width for _, a in self._adapters]
        return dict(
            round=self.round,
            rounds=len(self._schedule) - 1,
            schedule=self.schedule,
            compression=sum(a.in_dim for _, a in self._adapters) /
            max(sum(widths), 1),
            sigma_target=self.sigma_target,
            rho=self.rho,
            weighted=self.weighted,
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
        target = (f'target {self.sigma_target}' if self.schedule == 'within'
                  else f'planned survivors {self._schedule}')
        runner.logger.info(
            f'MiMi round {record["round"]}/{record["rounds"]} '
            f'({self.schedule}): compression {record["compression"]:.2f} '
            f'({target}), {sum(record["widths"])} neurons, adapter params '
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
