"""One training run per work dir.

Two runs writing into one work dir interleave their ``iter_N.pth`` files and
their companions (``iter_6_adapters.pth`` of one run beside ``iter_6.pth`` of
the other) and both exit 0. :class:`WorkDirLockHook` makes the second run stop
at ``before_train``, before it saves anything, with an error naming
the run that holds the work dir; ``tools/train.py`` takes the lock even
earlier, before mmengine's Runner writes its config copy and log into the
work dir (:func:`lock_work_dir`; the hook adopts it), so a refused run has
written nothing there. The lock is a JSON file in the work dir
(pid, host, start time, command line), created with ``O_EXCL``; it is removed
when the run ends, or when its process exits on an error. A lock left by a
killed run (its pid no longer exists on this host) is taken over with a
warning; one held from another host cannot be checked from here, so the error
says which file to delete once that run is known to be dead.

Holding the lock, the hook also removes what killed saves of this work dir
left behind (the temporary files of mmpeft's atomic writes, and nothing
else), and warns when auto-resume would follow a ``last_checkpoint`` that
points outside the work dir (a copied work dir resumes from the original).
Under DDP only rank 0 locks and cleans.
"""
import atexit
import json
import logging
import os
import os.path as osp
import re
import socket
import sys
import time
import uuid
from typing import Dict, List, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

LOCK_NAME = 'mmpeft_run.lock'
# The temporary names of mmpeft's atomic writes, '.{name}.{random}.tmp[.ext]':
# mmpeft.compat's checkpoint save ('.iter_4.pth.<pid>.<hex8>.tmp') and
# mmpeft.engine.export.atomic_write ('.iter_4_deploy.<mkstemp>.tmp.pth').
TEMP_NAME = re.compile(r'^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$')
# Locks this process took before its runner was built: lock file -> token.
_taken_early: Dict[str, str] = {}


class WorkDirLockedError(RuntimeError):
    """Another run holds the work dir."""


def stale_temp_files(directory: str) -> List[str]:
    """The leftover temporary files of mmpeft's atomic writes in
    ``directory`` (not recursive)."""
    if not osp.isdir(directory):
        return []
    return sorted(
        osp.join(directory, name) for name in os.listdir(directory)
        if TEMP_NAME.match(name) and osp.isfile(osp.join(directory, name)))


@HOOKS.register_module()
class WorkDirLockHook(Hook):
    """Lock ``runner.work_dir`` for the run (see module docs).

    Args:
        clean_temp_files: remove the temporary files of killed saves.
    """
    priority = 'HIGHEST'

    def __init__(self, clean_temp_files: bool = True):
        self.clean_temp_files = clean_temp_files
        self._path: Optional[str] = None
        self._token = uuid.uuid4().hex

    # -------------------------------------------------------------- stages
    def before_run(self, runner) -> None:
        """Before anything is loaded: where auto-resume will go."""
        if is_main_process() and getattr(runner, '_resume', False) and \
                not getattr(runner, '_load_from', None):
            _warn_foreign_last_checkpoint(runner)

    def before_train(self, runner) -> None:
        """Training runs only: ``tools/test.py`` with the same config (same
        work dir) may evaluate a checkpoint while the training goes on. The
        first stage of training, before any checkpoint is written."""
        if not is_main_process():
            return
        self.acquire(runner.work_dir, runner.logger)
        if self.clean_temp_files:
            for path in stale_temp_files(runner.work_dir):
                os.remove(path)
                runner.logger.warning(
                    f'WorkDirLockHook: removed {path}, the temporary file of '
                    'a save that was killed.')

    def after_run(self, runner) -> None:
        self.release()

    # ---------------------------------------------------------------- lock
    def acquire(self, work_dir: str, logger=None) -> None:
        """Create the lock file, or raise :class:`WorkDirLockedError`; a lock
        this process took with :func:`lock_work_dir` is adopted."""
        os.makedirs(work_dir, exist_ok=True)
        path = osp.join(osp.abspath(work_dir), LOCK_NAME)
        early = _taken_early.pop(path, None)
        if early is not None and _read_lock(path).get('token') == early:
            self._path, self._token = path, early
            atexit.register(self.release)
            return
        record = dict(pid=os.getpid(), host=socket.gethostname(),
                      started=time.strftime('%Y-%m-%d %H:%M:%S %Z'),
                      command=' '.join(sys.argv), token=self._token)
        for _ in range(3):  # two runs may race to take over a stale lock
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(path)
                reason = _stale_reason(holder)
                if reason is None:
                    raise WorkDirLockedError(_locked_message(path, holder))
                print_log(
                    f'WorkDirLockHook: taking over the lock {path} of '
                    f'{_describe(holder)}: {reason}.',
                    logger=logger or 'current', level=logging.WARNING)
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, 'w') as f:
                json.dump(record, f)
            self._path = path
            atexit.register(self.release)  # an error ends the process
            return
        raise WorkDirLockedError(_locked_message(path, _read_lock(path)))

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        path, self._path = self._path, None
        if path is not None and _read_lock(path).get('token') == self._token:
            os.remove(path)


def lock_work_dir(work_dir: str) -> None:
    """Lock ``work_dir`` for this process now, before a runner is built
    (mmengine's Runner writes its config copy and log into the work dir when
    it is built, before any hook runs); the run's ``WorkDirLockHook`` adopts
    the lock at ``before_train``. Raises :class:`WorkDirLockedError`, having
    written nothing, if another run holds it. Released when the process
    exits if no hook adopted it."""
    holder = WorkDirLockHook(clean_temp_files=False)
    holder.acquire(work_dir)
    _taken_early[holder._path] = holder._token


def _read_lock(path: str) -> dict:
    try:
        with open(path) as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}  # removed meanwhile, or half-written by a killed run


def _stale_reason(holder: dict) -> Optional[str]:
    """Why the holder cannot be running any more, or None if it may be."""
    pid, host = holder.get('pid'), holder.get('host')
    if not isinstance(pid, int):
        return 'the lock file is unreadable (a run killed while creating it)'
    if host != socket.gethostname():
        return None
    if pid == os.getpid():
        return ('it is this process: an earlier run in it stopped on an '
                'error')
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f'process {pid} no longer exists (the run was killed)'
    except PermissionError:
        pass  # exists, owned by another user
    return None


def _describe(holder: dict) -> str:
    return (f"pid {holder.get('pid')} on host {holder.get('host')!r}, "
            f"started {holder.get('started')} ({holder.get('command')!r})")


def _locked_message(path: str, holder: dict) -> str:
    here = holder.get('host') == socket.gethostname()
    check = (f"check with `ps -p {holder.get('pid')}`" if here else
             f"it runs on another host, {holder.get('host')!r}")
    return (f'The work dir {osp.dirname(path)} is in use by another training '
            f'run: {_describe(holder)}. Two runs in one work dir overwrite '
            'each other\'s checkpoints. Give this run its own --work-dir, or '
            f'wait for that run to end; if it is dead ({check}), delete '
            f'{path}.')


def _warn_foreign_last_checkpoint(runner) -> None:
    """Auto-resume follows ``work_dir/last_checkpoint``; warn if that points
    into another directory (a copied or moved work dir)."""
    pointer = osp.join(runner.work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return
    with open(pointer) as f:
        target = f.read().strip()
    if not target:
        return
    work_dir = osp.realpath(runner.work_dir)
    resolved = osp.realpath(osp.join(work_dir, target))
    # CheckpointHook(out_dir=D) saves into D/<work dir name> on purpose.
    homes = [work_dir] + [
        osp.realpath(osp.join(hook.out_dir, osp.basename(work_dir)))
        for hook in runner.hooks
        if isinstance(getattr(hook, 'out_dir', None), str)
        and osp.realpath(hook.out_dir) != work_dir
    ]
    if any(osp.commonpath([home, resolved]) == home for home in homes):
        return
    own = osp.join(runner.work_dir, osp.basename(target))
    hint = (f' This work dir has its own {own}: resume from it with '
            f'--resume {own}.' if osp.isfile(own) else '')
    runner.logger.warning(
        f'WorkDirLockHook: {pointer} points outside the work dir, to '
        f'{target}; auto-resume continues from that file, not from '
        f'{runner.work_dir}.{hint}')
