"""The parts of MiMi's pruning that are not the hook's timing
(:class:`~mmpeft.engine.MiMiPruneHook` decides when a round happens).

One job per module: :mod:`.plan` (the schedules' arguments, the live
neurons after each round, whether a run fits the plan), :mod:`.scoring`
(neuron scores and the two global selection rules, pure torch),
:mod:`.surgery` (new masks applied, the optimizer state of pruned neurons
zeroed) and :mod:`.schedulers` (the learning-rate schedule replayed every
round of ``schedule='rounds'``).
"""
from .plan import SCHEDULES, official_plan, within_plan
from .schedulers import param_schedulers, restart_param_schedulers
from .scoring import global_prune_masks, neuron_scores, official_prune_masks
from .surgery import apply_masks, clear_optimizer_state

__all__ = [
    'SCHEDULES', 'apply_masks', 'clear_optimizer_state', 'global_prune_masks',
    'neuron_scores', 'official_plan', 'official_prune_masks',
    'param_schedulers', 'restart_param_schedulers', 'within_plan'
]
