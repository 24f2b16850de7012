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
"""
import json
import math
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.dist import broadcast, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmengine.optim.scheduler.param_scheduler import \
    ReduceOnPlateauParamScheduler
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

from ..adapters import MiMiAdapter

SCHEDULES = ('within', 'rounds')


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
        if schedule == 'within':
            self._init_within(sigma_target, interval, by_epoch, rounds,
                              round_iters, round_epochs)
        else:
            self._init_rounds(sigma_target, interval, by_epoch, rounds,
                              round_iters, round_epochs)
        self.round = 0
        self._resumed_round: Optional[int] = None
        self._adapters: List[Tuple[str, MiMiAdapter]] = []
        self._schedule: List[int] = []

    def _init_within(self, sigma_target, interval, by_epoch, rounds,
                     round_iters, round_epochs) -> None:
        given = [name for name, value in (
            ('rounds', rounds), ('round_iters', round_iters),
            ('round_epochs', round_epochs)) if value is not None]
        if given:
            raise ValueError(
                f'MiMiPruneHook: {", ".join(given)} belong to '
                "schedule='rounds'; set schedule='rounds' or give "
                'sigma_target / interval / by_epoch instead.')
        if not (isinstance(sigma_target, (int, float))
                and 1 < sigma_target < math.inf):
            raise ValueError(
                f'MiMiPruneHook: sigma_target must be a finite number > 1 '
                f'(sum of adapter input widths / live neurons), got '
                f'{sigma_target!r}.')
        interval = 1 if interval is None else interval
        if not (isinstance(interval, int) and interval >= 1):
            raise ValueError(f'MiMiPruneHook: interval must be an integer '
                             f'>= 1, got {interval!r}.')
        self.sigma_target = float(sigma_target)
        self.rounds = None
        self.interval = interval
        self.by_epoch = True if by_epoch is None else by_epoch

    def _init_rounds(self, sigma_target, interval, by_epoch, rounds,
                     round_iters, round_epochs) -> None:
        given = [name for name, value in (
            ('sigma_target', sigma_target), ('interval', interval),
            ('by_epoch', by_epoch)) if value is not None]
        if given:
            raise ValueError(
                f"MiMiPruneHook(schedule='rounds') takes rounds and "
                f'round_iters or round_epochs, not {", ".join(given)} (the '
                "'within' schedule's): the compression follows from rho and "
                'rounds.')
        if not (isinstance(rounds, int) and rounds >= 1):
            raise ValueError(
                f"MiMiPruneHook(schedule='rounds') needs rounds, an integer "
                f'>= 1 (official --range; its run script uses 4), got '
                f'{rounds!r}.')
        lengths = [value for value in (round_iters, round_epochs)
                   if value is not None]
        if len(lengths) != 1 or not (isinstance(lengths[0], int)
                                     and lengths[0] >= 1):
            raise ValueError(
                "MiMiPruneHook(schedule='rounds') needs exactly one of "
                'round_iters / round_epochs, an integer >= 1 (the length of '
                f'one round), got round_iters={round_iters!r}, '
                f'round_epochs={round_epochs!r}.')
        self.sigma_target = None
        self.rounds = rounds
        self.interval = lengths[0]
        self.by_epoch = round_epochs is not None

    # ------------------------------------------------------------------ plan
    def plan(self, in_dims: List[int], start_widths: List[int]) -> List[int]:
        """Live neurons planned before round 1, after round 1, ..., last
        (for ``rounds``: the survivors the official count asks for)."""
        if self.schedule == 'rounds':
            return official_plan(sum(start_widths), self.rho, self.rounds)
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
                'MiMiPruneHook cannot count rounds in epochs in an '
                'IterBasedTrainLoop: set by_epoch=False and give the interval '
                "in iterations (schedule='rounds': round_iters).")
        self._schedule = self.plan(
            [a.in_dim for _, a in self._adapters],
            [a.hidden_dim for _, a in self._adapters])
        live = sum(a.width for _, a in self._adapters)
        if self.schedule == 'rounds':
            self._check_rounds_fit(runner)
            self.round = self._rounds_done(runner)
            self._check_rounds_masks(live)
        else:
            if live not in self._schedule:
                raise RuntimeError(
                    f'MiMiPruneHook: the model has {live} live adapter '
                    f'neurons, which is no step of the plan {self._schedule} '
                    f'for rho={self.rho}, sigma_target={self.sigma_target}. '
                    'A resumed run must keep the rho and sigma_target it was '
                    'pruned with.')
            self.round = self._schedule.index(live)
            self._check_schedule_fits(runner)
        self._check_checkpoint_round()
        if self.round == 0:
            self._report(runner, runner.epoch, runner.iter)

    def _check_checkpoint_round(self) -> None:
        """The round a loaded checkpoint recorded must be the one its masks
        (``within``) or its progress (``rounds``) say."""
        if self._resumed_round not in (None, self.round):
            raise RuntimeError(
                f'MiMiPruneHook: the checkpoint says {self._resumed_round} '
                f'rounds were done but its masks match round {self.round}.')

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

    # ------------------------------------------------- the 'rounds' schedule
    def _rounds_done(self, runner) -> int:
        """Rounds finished (each ends with its prune) at the loop's position:
        also right after resuming, mid-round or at a round boundary."""
        done = runner.epoch if self.by_epoch else runner.iter
        return min(done // self.interval, self.rounds)

    def _check_rounds_fit(self, runner) -> None:
        """The loop is ``rounds`` rounds long, no round is empty of neurons,
        and every param scheduler can replay within one round."""
        unit = 'epochs' if self.by_epoch else 'iters'
        total = runner.max_epochs if self.by_epoch else runner.max_iters
        if total != self.rounds * self.interval:
            raise ValueError(
                f"MiMiPruneHook(schedule='rounds'): {self.rounds} rounds of "
                f'{self.interval} {unit} need a training loop of '
                f'{self.rounds * self.interval} {unit}, the config has '
                f'{total}. Set train_cfg max_{unit} = rounds * '
                f'round_{unit}.')
        if 0 in self._schedule:
            empty = self._schedule.index(0)
            raise ValueError(
                f"MiMiPruneHook(schedule='rounds'): rho={self.rho} leaves no "
                f'neuron after round {empty} of {self.rounds} (survivors '
                f'{self._schedule}); the official loop then stops training. '
                'Lower rounds or rho.')
        epoch_len = len(runner.train_dataloader) if self.by_epoch else None
        for scheduler in _param_schedulers(runner):
            name = type(scheduler).__name__
            if isinstance(scheduler, ReduceOnPlateauParamScheduler):
                raise ValueError(
                    f"MiMiPruneHook(schedule='rounds') cannot restart {name}: "
                    'it follows a metric, not a curve over steps. Use a '
                    'step-based scheduler (LinearLR + CosineAnnealingLR, as '
                    'the official warm-up + cosine).')
            if scheduler.by_epoch and not self.by_epoch:
                raise ValueError(
                    f"MiMiPruneHook(schedule='rounds', round_iters=...) "
                    f'restarts the schedule between iterations, but {name} '
                    'steps per epoch: give the rounds in epochs '
                    '(round_epochs) or the scheduler convert_to_iter_based='
                    'True.')
            length = (self.interval if scheduler.by_epoch
                      or not self.by_epoch else self.interval * epoch_len)
            if scheduler.begin >= length:
                raise ValueError(
                    f"MiMiPruneHook(schedule='rounds'): {name} begins at step "
                    f'{scheduler.begin}, after the end of a round ({length} '
                    f'steps); each round replays the schedule from step 0, '
                    'so describe one round in param_scheduler.')

    def _check_rounds_masks(self, live: int) -> None:
        """Live neurons possible after ``self.round`` rounds: all of them
        before the first prune, at least the planned survivors after."""
        total, least = self._schedule[0], self._schedule[self.round]
        if self.round == 0:
            ok, expected = live == total, f'all {total}'
        else:
            ok, expected = least <= live <= total, f'{least} or more (ties)'
        if not ok:
            raise RuntimeError(
                f"MiMiPruneHook(schedule='rounds'): after {self.round} rounds "
                f'the model should have {expected} live neurons (plan '
                f'{self._schedule}), it has {live}. A resumed run must keep '
                'the rho, rounds and round length it was pruned with.')

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
        sizes = [a.hidden_dim for _, a in self._adapters]
        for (_, adapter), mask in zip(self._adapters, masks.split(sizes)):
            adapter.set_mask(mask)
        self._clear_optimizer_state(runner)
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


# --------------------------------------------------------------------------
# Scores and selection rules (pure functions; rank 0 calls them)
# --------------------------------------------------------------------------
def neuron_scores(adapters: Sequence[MiMiAdapter],
                  weighted: bool = False) -> List[torch.Tensor]:
    """Per adapter, the score of each neuron (masked ones score 0), divided
    by the adapter's best score when ``weighted`` (an adapter without a
    scoring neuron keeps its zeros)."""
    scores = [a.importance() for a in adapters]
    if weighted:
        scores = [
            torch.where(s != 0, s / s.max(), s) if s.numel() else s
            for s in scores
        ]
    return scores


def global_prune_masks(adapters: Sequence[MiMiAdapter],
                       live_after: int,
                       weighted: bool = False) -> torch.Tensor:
    """``'within'`` rule. New masks of ``adapters``, concatenated in order:
    the ``live_after`` best-scored live neurons over all adapters stay on
    (ties go to the neuron first in adapter order), whichever adapters they
    are in."""
    masks = torch.cat([a.neuron_mask for a in adapters]).clone()
    live = masks.nonzero().flatten()
    if not 0 <= live_after <= live.numel():
        raise ValueError(f'cannot keep {live_after} of {live.numel()} live '
                         'neurons')
    scores = torch.cat(neuron_scores(adapters, weighted)).to(masks.device)
    ranked = torch.sort(scores[live], stable=True).indices
    masks[live[ranked[:live.numel() - live_after]]] = 0
    return masks


def official_plan(total: int, rho: float, rounds: int) -> List[int]:
    """``[total, survivors after round 1, ..., after round `rounds`]`` as
    ``few_shot_prune.py`` counts them: ``amount`` grows by
    ``(1 - amount) * rho`` per round (a Python float) and
    ``floor(total * (1 - amount))`` survive, the product taken in float32
    (the official total is a ``FloatTensor`` sum)."""
    plan, amount = [total], rho
    for _ in range(rounds):
        plan.append(int(np.floor(
            torch.tensor(float(total), dtype=torch.float32) * (1.0 - amount))))
        amount = amount + (1 - amount) * rho
    return plan


def official_prune_masks(adapters: Sequence[MiMiAdapter],
                         survivors: int,
                         weighted: bool = False) -> torch.Tensor:
    """``'rounds'`` rule, the official ``structured_magnitude_pruning_layer``:
    the threshold is the ``survivors``-th best score over every neuron of
    every adapter (masked ones score 0) and each live neuron scoring at
    least that stays, so a tie at the threshold keeps all its neurons.

    One case differs by construction: if live neurons score exactly 0 (all
    their weights zero) and the threshold falls to 0, the official code
    switches every masked neuron back on, with the weights it had; mmpeft
    zeroed those weights and keeps them off."""
    masks = torch.cat([a.neuron_mask for a in adapters]).clone()
    scores = torch.cat(neuron_scores(adapters, weighted)).to(masks.device)
    if not 0 <= survivors <= scores.numel():
        raise ValueError(f'cannot keep {survivors} of {scores.numel()} '
                         'neurons')
    if survivors == 0:
        return torch.zeros_like(masks)
    threshold = torch.topk(scores, survivors).values[-1]
    return masks * (scores >= threshold).to(masks.dtype)


# --------------------------------------------------------------------------
# Restarting the learning-rate schedule
# --------------------------------------------------------------------------
def _param_schedulers(runner) -> list:
    schedulers = runner.param_schedulers or []
    if isinstance(schedulers, dict):  # one list per optimizer
        return [s for group in schedulers.values() for s in group]
    return list(schedulers)


def restart_param_schedulers(runner) -> None:
    """Put every param scheduler of the runner (and the values it drives)
    back where it stood right after it was built, so the next step is step 0
    of the same curve: each scheduled value goes back to its ``initial_*``,
    then every scheduler takes its construction step again, in build order
    (as chained warm-up + cosine schedulers were built)."""
    schedulers = _param_schedulers(runner)
    for scheduler in schedulers:
        name = scheduler.param_name
        for group in scheduler.optimizer.param_groups:
            group[name] = group[f'initial_{name}']
    for scheduler in schedulers:
        scheduler.last_step = -1
        scheduler._global_step = -1
        scheduler.step()
