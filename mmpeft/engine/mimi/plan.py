"""The pruning plan: which arguments describe a schedule, how many adapter
neurons stay after each round, and whether a run (fresh or resumed) can
carry that plan out.

A plan is the list ``[live neurons before round 1, after round 1, ...,
after the last round]``; the hook walks along it, one step per round.
"""
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

SCHEDULES = ('within', 'rounds')


def _given(**arguments) -> List[str]:
    """The names of the arguments that were set (not None), in order."""
    return [name for name, value in arguments.items() if value is not None]


def within_args(sigma_target, interval, by_epoch, rounds, round_iters,
                round_epochs) -> Tuple[float, int, bool]:
    """``(sigma_target, interval, by_epoch)`` of ``schedule='within'``,
    checked; the ``'rounds'`` arguments are refused."""
    given = _given(rounds=rounds, round_iters=round_iters,
                   round_epochs=round_epochs)
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
    by_epoch = True if by_epoch is None else by_epoch
    return float(sigma_target), interval, by_epoch


def rounds_args(sigma_target, interval, by_epoch, rounds, round_iters,
                round_epochs) -> Tuple[int, int, bool]:
    """``(rounds, round length, by_epoch)`` of ``schedule='rounds'``,
    checked; the ``'within'`` arguments are refused."""
    given = _given(sigma_target=sigma_target, interval=interval,
                   by_epoch=by_epoch)
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
    return rounds, lengths[0], round_epochs is not None


def within_plan(in_dims: Sequence[int], start_widths: Sequence[int],
                rho: float, sigma_target: float) -> List[int]:
    """``'within'``: each round removes ``max(1, round(rho * live))``
    neurons, the last one only down to ``floor(sum C / sigma_target)``."""
    total_in = sum(in_dims)
    start = sum(start_widths)
    final = math.floor(total_in / sigma_target)
    if final < 1:
        raise ValueError(
            f'MiMiPruneHook: sigma_target={sigma_target} would '
            f'remove every neuron: the adapters have {total_in} input '
            f'channels in all, so the largest compression with one '
            f'neuron left is {total_in}. Lower sigma_target.')
    if final >= start:
        raise ValueError(
            f'MiMiPruneHook: sigma_target={sigma_target} is already '
            f'met before pruning (compression {total_in / start:.3g} with '
            f'{start} neurons): raise sigma_target above sigma0, or drop '
            'the hook to train fixed-size adapters.')
    schedule = [start]
    while schedule[-1] > final:
        live = schedule[-1]
        schedule.append(max(final, live - max(1, round(rho * live))))
    return schedule


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


# --------------------------------------------- does the run fit the plan?
def within_round(plan: List[int], live: int, rho: float,
                 sigma_target: float) -> int:
    """The round a model with ``live`` neurons is at: its step in the plan
    (a resumed run must have been pruned along the same plan)."""
    if live not in plan:
        raise RuntimeError(
            f'MiMiPruneHook: the model has {live} live adapter '
            f'neurons, which is no step of the plan {plan} '
            f'for rho={rho}, sigma_target={sigma_target}. '
            'A resumed run must keep the rho and sigma_target it was '
            'pruned with.')
    return plan.index(live)


def check_within_fits(plan: List[int], round_: int, interval: int,
                      by_epoch: bool, done: int, total: int,
                      sigma_target: float, rho: float) -> None:
    """The rounds still to do fit in what is left of the training loop
    (``done`` / ``total`` epochs or iterations)."""
    unit = 'epochs' if by_epoch else 'iterations'
    rounds_left = len(plan) - 1 - round_
    points_left = total // interval - done // interval
    if rounds_left > points_left:
        raise ValueError(
            f'MiMiPruneHook: reaching sigma_target={sigma_target} '
            f'with rho={rho} takes {len(plan) - 1} rounds '
            f'(live neurons {plan}), {rounds_left} still to '
            f'do, but one round every {interval} {unit} fits only '
            f'{points_left} more in {total} {unit}. Lower interval or '
            'sigma_target, raise rho, or train longer.')


def rounds_done(done: int, interval: int, rounds: int) -> int:
    """``'rounds'``: rounds finished (each ends with its prune) after
    ``done`` epochs / iterations: also right after resuming, mid-round or
    at a round boundary."""
    return min(done // interval, rounds)


def check_rounds_loop(plan: List[int], rounds: int, interval: int,
                      by_epoch: bool, total: int, rho: float) -> None:
    """``'rounds'``: the loop is ``rounds`` rounds long and no round is left
    without neurons."""
    unit = 'epochs' if by_epoch else 'iters'
    if total != rounds * interval:
        raise ValueError(
            f"MiMiPruneHook(schedule='rounds'): {rounds} rounds of "
            f'{interval} {unit} need a training loop of '
            f'{rounds * interval} {unit}, the config has '
            f'{total}. Set train_cfg max_{unit} = rounds * '
            f'round_{unit}.')
    if 0 in plan:
        empty = plan.index(0)
        raise ValueError(
            f"MiMiPruneHook(schedule='rounds'): rho={rho} leaves no "
            f'neuron after round {empty} of {rounds} (survivors '
            f'{plan}); the official loop then stops training. '
            'Lower rounds or rho.')


def check_rounds_masks(plan: List[int], round_: int, live: int) -> None:
    """``'rounds'``: live neurons possible after ``round_`` rounds: all of
    them before the first prune, at least the planned survivors after."""
    total, least = plan[0], plan[round_]
    if round_ == 0:
        ok, expected = live == total, f'all {total}'
    else:
        ok, expected = least <= live <= total, f'{least} or more (ties)'
    if not ok:
        raise RuntimeError(
            f"MiMiPruneHook(schedule='rounds'): after {round_} rounds "
            f'the model should have {expected} live neurons (plan '
            f'{plan}), it has {live}. A resumed run must keep '
            'the rho, rounds and round length it was pruned with.')


def check_checkpoint_round(recorded: Optional[int], round_: int) -> None:
    """The round a loaded checkpoint recorded must be the one its masks
    (``within``) or its progress (``rounds``) say."""
    if recorded not in (None, round_):
        raise RuntimeError(
            f'MiMiPruneHook: the checkpoint says {recorded} '
            f'rounds were done but its masks match round {round_}.')
