"""``schedule='rounds'``: every round replays the learning-rate schedule
from step 0, as the official loop builds a fresh one per round."""
from mmengine.optim.scheduler.param_scheduler import \
    ReduceOnPlateauParamScheduler


def param_schedulers(runner) -> list:
    """The runner's param schedulers as one list (one list per optimizer
    flattened)."""
    schedulers = runner.param_schedulers or []
    if isinstance(schedulers, dict):  # one list per optimizer
        return [s for group in schedulers.values() for s in group]
    return list(schedulers)


def check_restartable(runner, round_length: int, by_epoch: bool) -> None:
    """Every param scheduler can replay within one round of
    ``round_length`` epochs (``by_epoch``) or iterations."""
    epoch_len = len(runner.train_dataloader) if by_epoch else None
    for scheduler in param_schedulers(runner):
        name = type(scheduler).__name__
        if isinstance(scheduler, ReduceOnPlateauParamScheduler):
            raise ValueError(
                f"MiMiPruneHook(schedule='rounds') cannot restart {name}: "
                'it follows a metric, not a curve over steps. Use a '
                'step-based scheduler (LinearLR + CosineAnnealingLR, as '
                'the official warm-up + cosine).')
        if scheduler.by_epoch and not by_epoch:
            raise ValueError(
                f"MiMiPruneHook(schedule='rounds', round_iters=...) "
                f'restarts the schedule between iterations, but {name} '
                'steps per epoch: give the rounds in epochs '
                '(round_epochs) or the scheduler convert_to_iter_based='
                'True.')
        length = (round_length if scheduler.by_epoch
                  or not by_epoch else round_length * epoch_len)
        if scheduler.begin >= length:
            raise ValueError(
                f"MiMiPruneHook(schedule='rounds'): {name} begins at step "
                f'{scheduler.begin}, after the end of a round ({length} '
                f'steps); each round replays the schedule from step 0, '
                'so describe one round in param_scheduler.')


def restart_param_schedulers(runner) -> None:
    """Put every param scheduler of the runner (and the values it drives)
    back where it stood right after it was built, so the next step is step 0
    of the same curve: each scheduled value goes back to its ``initial_*``,
    then every scheduler takes its construction step again, in build order
    (as chained warm-up + cosine schedulers were built)."""
    schedulers = param_schedulers(runner)
    for scheduler in schedulers:
        name = scheduler.param_name
        for group in scheduler.optimizer.param_groups:
            group[name] = group[f'initial_{name}']
    for scheduler in schedulers:
        scheduler.last_step = -1
        scheduler._global_step = -1
        scheduler.step()
