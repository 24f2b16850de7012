"""Resume exactly where a run stopped, and only from a training checkpoint.

Why a stock resume is not exact: mmengine checkpoints hold the weights, the
optimizer, the schedulers, the message hub and the iteration, not the random
generators. A resumed run re-seeds them from the config, so after the resume
point the dropout and drop-path masks, the RPN / RoI samplers and (with
``num_workers=0``) the augmentations differ from those of the uninterrupted
run, and so do the final weights.

What this hook does: right before the batch of iteration ``i`` is fetched
(iteration-based loops), or at the start of each epoch and of each iteration
(epoch-based loops, which resume at epoch boundaries), it re-seeds Python,
NumPy and torch (CPU and every CUDA device) from ``(seed, rank, i)``. The
random stream of an iteration then depends on where it is, not on how the
process got there, so a resumed run replays the uninterrupted one. Data
workers need nothing: mmengine seeds them from the seed and replays the
skipped batches when it resumes. On GPUs, exactness also needs
``randomness=dict(seed=..., deterministic=True)`` and ops with deterministic
kernels; the hook has to be in the original run and in the resumed one.

The hook also refuses to resume from a checkpoint that is not a training
checkpoint (deploy, adapter-only, bare weights), before anything is loaded.
"""
import os.path as osp
import random
from typing import Callable, Iterator

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import find_latest_checkpoint

from .checkpoint_io import load_file
from .export import ADAPTER_META_KEY, DEPLOY_META_KEY


class NotResumableError(RuntimeError):
    """``--resume`` got a checkpoint that is not a training checkpoint."""


def step_seed(base_seed: int, rank: int, *step: int) -> int:
    """A 32-bit seed that depends only on the run's seed, the rank and the
    position in training (well mixed: neighbouring steps are unrelated)."""
    entropy = [int(base_seed) % (1 << 64), rank, *step]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch on all devices (``manual_seed`` covers CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _ReseedBeforeFetch:
    """Wraps an iteration-based loop's dataloader iterator: the n-th ``next``
    re-seeds for iteration n, then fetches (so the augmentations drawn in the
    main process are reproducible too)."""

    def __init__(self, iterator: Iterator, reseed: Callable[[int], None]):
        self._iterator = iterator
        self._reseed = reseed
        self._step = 0

    def __iter__(self):
        return self

    def __next__(self):
        self._reseed(self._step)
        self._step += 1
        return next(self._iterator)

    def __getattr__(self, name):
        return getattr(self._iterator, name)


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Make ``--resume`` reproduce the uninterrupted run (see module docs),
    and reject checkpoints that cannot be resumed with the fix to apply."""
    priority = 'VERY_HIGH'

    def __init__(self):
        self._base_seed = 0
        self._rank = 0
        self._wrapped = False

    # ------------------------------------------------------------- resuming
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Runs before the checkpoint's weights are loaded into the model."""
        if getattr(runner, '_resume', False):  # load_from is not resuming
            check_resumable(checkpoint, resume_source(runner))

    # -------------------------------------------------------------- seeding
    def before_train(self, runner) -> None:
        self._base_seed = runner.seed
        self._rank = get_rank()
        loop = runner.train_loop
        # Called by IterBasedTrainLoop.run before it skips the batches a
        # resumed run has already trained on, so fetch n is iteration n.
        if hasattr(loop, 'dataloader_iterator'):
            loop.dataloader_iterator = _ReseedBeforeFetch(
                loop.dataloader_iterator,
                lambda step: seed_everything(
                    step_seed(self._base_seed, self._rank, 1, step)))
            self._wrapped = True

    def before_train_epoch(self, runner) -> None:
        if not self._wrapped:  # before the epoch's dataloader iterator
            seed_everything(
                step_seed(self._base_seed, self._rank, 0, runner.epoch))

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        if not self._wrapped:
            seed_everything(
                step_seed(self._base_seed, self._rank, 1, runner.iter))


def check_resumable(checkpoint: dict, path: str = 'the checkpoint') -> None:
    """Raise :class:`NotResumableError` unless ``checkpoint`` is a training
    checkpoint: the training model's weights and the position in training."""
    meta = checkpoint.get('meta') or {}
    if DEPLOY_META_KEY in meta:
        source = meta.get('source_checkpoint') or _training_name(path)
        raise NotResumableError(
            f'{path} is a deploy checkpoint (adapters merged for inference, '
            'written by AdapterMergeHook or tools/merge_adapters.py): its '
            'weights no longer fit the training model and it has no '
            'optimizer state, so training cannot resume from it. Resume from '
            'the training checkpoint it was exported from: '
            f'--resume {source}. To evaluate the deploy checkpoint, use '
            'tools/test.py with the deploy config written beside it.')
    if ADAPTER_META_KEY in meta:
        source = meta.get('source_checkpoint') or _training_name(path)
        raise NotResumableError(
            f'{path} is an adapter-only checkpoint (the trainable tensors '
            'without the frozen base and without optimizer state), so '
            'training cannot resume from it. Resume from the training '
            f'checkpoint it was exported from: --resume {source}.')
    missing = (['state_dict'] if 'state_dict' not in checkpoint else []) + [
        f"meta['{key}']" for key in ('epoch', 'iter') if key not in meta]
    if missing:
        raise NotResumableError(
            f'{path} is not a training checkpoint written by mmengine '
            f'(it lacks {", ".join(missing)}), so training cannot resume '
            'from it. Resume from a work_dir/iter_*.pth or epoch_*.pth; to '
            'start a new run from these weights use load_from '
            f'(--cfg-options load_from={path}) without --resume.')


def check_resumable_file(path: str) -> None:
    """:func:`check_resumable` for a local file, read safely (memory-mapped:
    the tensors are not read); a missing, unreadable or unsafe file raises
    :class:`~mmpeft.engine.checkpoint_io.CheckpointReadError` naming it.
    Remote paths (``scheme://``) are left to mmengine's loader."""
    if '://' not in str(path):
        check_resumable(load_file(path, mmap=True), path)


def resume_source(runner) -> str:
    """The file being resumed from, as the runner chose it."""
    path = getattr(runner, '_load_from', None) or find_latest_checkpoint(
        runner.work_dir)
    return str(path) if path else 'the checkpoint'


def _training_name(path: str) -> str:
    """``iter_8_deploy.pth`` / ``iter_8_adapters.pth`` -> ``iter_8.pth``
    (the names AdapterMergeHook gives the files beside ``iter_8.pth``)."""
    stem, ext = osp.splitext(path)
    for suffix in ('_deploy', '_adapters'):
        if stem.endswith(suffix):
            return stem[:-len(suffix)] + ext
    return 'the training checkpoint (work_dir/iter_*.pth)'
