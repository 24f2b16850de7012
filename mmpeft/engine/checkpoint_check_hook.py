"""Refuse a checkpoint that does not fit, before the runner loads it.

mmengine's ``load_from`` loads non-strictly: a checkpoint that leaves weights
at their random init, a deploy file under the training config or a training
file under the deploy config only logs a keys warning, and the evaluation
that follows reports a wrong number. ``tools/train.py`` and ``tools/test.py``
add this hook (``mmpeft.engine.runner.build_runner``); other entry points can
list it in ``custom_hooks``.
"""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import BaseLoop
from torch.optim import Optimizer

from .checkpoint_io import (ALLOW_PARTIAL_KEY, check_checkpoint_fits,
                            check_optimizer_fits, opt_in)
from .exact_resume_hook import check_resumable, resume_source
from .param_table import unwrap_model


@HOOKS.register_module()
class CheckpointCheckHook(Hook):
    """At ``after_load_checkpoint`` (read, not yet in the model; after the
    hooks that edit the checkpoint, e.g. ``AdapterLoadHook``) check it with
    :func:`~mmpeft.engine.checkpoint_io.check_checkpoint_fits`; when
    resuming also that it is a training checkpoint of this config (weights
    and optimizer parameter groups). ``load_from`` in a training run may
    lack the adapters (they keep their init): PEFT from a stock detector.

    Args:
        allow_partial: let ``load_from`` leave weights unloaded (a warning
            names them), for deliberate partial loads. None: whether this
            process was given ``--allow-partial`` or the config's
            ``mmpeft_allow_partial`` (default False).
    """
    priority = 'LOWEST'

    def __init__(self, allow_partial: Optional[bool] = None):
        self.allow_partial = allow_partial

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        resume = bool(getattr(runner, '_resume', False))
        path = resume_source(runner)
        allow_partial = self.allow_partial
        if allow_partial is None:
            allow_partial = opt_in(ALLOW_PARTIAL_KEY) or bool(
                runner.cfg.get(ALLOW_PARTIAL_KEY, False))
        if resume:
            check_resumable(checkpoint, path)
        # train() builds its loop before loading; test() and val() do not.
        training = isinstance(getattr(runner, '_train_loop', None), BaseLoop)
        check_checkpoint_fits(unwrap_model(runner.model), checkpoint, path,
                              runner.cfg, resume, allow_partial, training)
        optimizer = getattr(runner.optim_wrapper, 'optimizer', None)
        saved = checkpoint.get('optimizer')
        if resume and isinstance(optimizer, Optimizer) and isinstance(
                saved, dict) and 'param_groups' in saved:
            check_optimizer_fits(
                optimizer, saved, path,
                getattr(runner.cfg, 'filename', None) or 'this config')
