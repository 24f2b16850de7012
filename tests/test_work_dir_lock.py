"""One training run per work dir (WorkDirLockHook): a second run stops with
an error naming the holder, a killed run's lock is taken over, and a copied
work dir's last_checkpoint pointing back to the original gets a warning."""
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

from checkpoint_support import assert_error_shown, toy_config
from mmpeft.engine import WorkDirLockedError, WorkDirLockHook
from mmpeft.engine import work_dir_lock_hook
from helpers import REPO_ROOT, load_tool
from test_reliability_support import run_tool, toy_runner

LOCK = work_dir_lock_hook.LOCK_NAME
HOLD = textwrap.dedent('''
    import sys
    from mmengine.logging import MMLogger
    from mmpeft.engine.work_dir_lock_hook import WorkDirLockHook
    WorkDirLockHook().acquire(sys.argv[1], MMLogger.get_current_instance())
    print('locked', flush=True)
    sys.stdin.read()  # hold until the test closes stdin (or kills us)
''')


def locked_run(work_dir, **kwargs):
    return toy_runner(work_dir, custom_hooks=[dict(type='WorkDirLockHook')],
                      **kwargs)


@pytest.fixture
def holder(tmp_path):
    """Another process holding tmp_path/'work' (killed at the end)."""
    work_dir = tmp_path / 'work'
    proc = subprocess.Popen(
        [sys.executable, '-c', HOLD, str(work_dir)], cwd=REPO_ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(
            [REPO_ROOT, os.environ.get('PYTHONPATH', '')])))
    assert proc.stdout.readline().strip() == 'locked'
    yield work_dir, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class Collect(logging.Handler):

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def warnings_of(runner):
    collect = Collect()
    runner.logger.addHandler(collect)
    return collect.messages


def test_second_run_stops_naming_the_holder_then_takes_over_when_killed(
        holder):
    work_dir, proc = holder
    with pytest.raises(WorkDirLockedError) as error:
        locked_run(work_dir).train()
    message = str(error.value)
    assert f'pid {proc.pid} on host {socket.gethostname()!r}' in message
    assert '--work-dir' in message and str(work_dir / LOCK) in message
    assert not any(name.endswith('.pth') for name in os.listdir(work_dir))

    proc.kill()  # SIGKILL: the holder cannot remove its lock
    proc.wait()
    assert (work_dir / LOCK).exists()
    runner = locked_run(work_dir)
    warnings = warnings_of(runner)
    runner.train()
    assert any(f'process {proc.pid} no longer exists' in m for m in warnings)
    assert (work_dir / 'iter_4.pth').exists()
    assert not (work_dir / LOCK).exists()  # released at the end


def files_and_bytes(directory):
    return {os.path.join(root, name): open(os.path.join(root, name),
                                           'rb').read()
            for root, _, names in os.walk(directory) for name in names}


def test_refused_second_training_writes_nothing(holder, tmp_path,
                                                monkeypatch):
    """mmengine's Runner writes work_dir/<config>.py and its log when it is
    built, before any hook runs: tools/train.py takes the lock first, so the
    running run's config copy (its seed, its schedule) stays as it was."""
    work_dir, proc = holder
    monkeypatch.syspath_prepend(str(tmp_path))
    config = toy_config(str(tmp_path), str(work_dir), extra=(
        "custom_hooks = [dict(type='WorkDirLockHook')]\n"))
    (work_dir / 'toy_config.py').write_text('# the running run: seed 0\n')
    before = files_and_bytes(work_dir)
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setattr(sys, 'argv', ['train.py', config, '--cfg-options',
                                      'randomness.seed=7'])
    with pytest.raises(WorkDirLockedError, match=f'pid {proc.pid}'):
        load_tool('train').main()
    assert files_and_bytes(work_dir) == before

    # As a user sees it: the error first, no traceback (it is in --debug).
    proc = run_tool([sys.executable, 'tools/train.py', config],
                    pythonpath=[str(tmp_path)])
    assert assert_error_shown(proc, 'WorkDirLockedError').startswith(
        f'The work dir {work_dir} is in use')
    assert files_and_bytes(work_dir) == before


def test_lock_file_names_pid_host_and_start(holder):
    work_dir, proc = holder
    record = json.loads((work_dir / LOCK).read_text())
    assert record['pid'] == proc.pid
    assert record['host'] == socket.gethostname()
    assert record['started'] and record['command']


def dead_pid():
    proc = subprocess.Popen(['true'])
    proc.wait()
    return proc.pid


def test_lock_from_another_host_is_never_taken_over(tmp_path):
    """Its pid means nothing here (no process has it on this host)."""
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / LOCK).write_text(json.dumps(dict(
        pid=dead_pid(), host='node-7', started='yesterday',
        command='train.py')))
    with pytest.raises(WorkDirLockedError,
                       match="another host, 'node-7'.*delete"):
        locked_run(work_dir).train()


def test_run_after_a_failed_run_in_this_process(tmp_path):
    """An error (here a NaN) leaves the lock of this process behind until
    it exits; the next run in the same process takes it over."""
    from mmpeft.engine import NonFiniteLossError
    with pytest.raises(NonFiniteLossError):
        toy_runner(tmp_path, poison_at=2, custom_hooks=[
            dict(type='WorkDirLockHook'), dict(type='NaNGuardHook')]).train()
    assert (tmp_path / LOCK).exists()
    locked_run(tmp_path).train()
    assert not (tmp_path / LOCK).exists()


def test_only_rank0_locks_and_evaluation_does_not(tmp_path, monkeypatch):
    runner = locked_run(tmp_path)
    hook = WorkDirLockHook()
    hook.before_run(runner)  # also the first stage of tools/test.py
    assert not (tmp_path / LOCK).exists()
    monkeypatch.setattr(work_dir_lock_hook, 'is_main_process', lambda: False)
    hook.before_train(runner)
    assert not (tmp_path / LOCK).exists()


def test_copied_work_dir_warns_about_last_checkpoint(tmp_path):
    original, copy = tmp_path / 'original', tmp_path / 'copy'
    locked_run(original).train()
    shutil.copytree(original, copy)
    pointer = (copy / 'last_checkpoint').read_text()
    assert pointer == str(original / 'iter_4.pth')
    runner = locked_run(copy, max_iters=6)
    runner._resume = True  # what tools/train.py --resume (auto) sets
    warnings = warnings_of(runner)
    runner.train()
    warning = [m for m in warnings if 'points outside the work dir' in m]
    assert warning, warnings
    assert str(copy / 'last_checkpoint') in warning[0]
    assert str(original / 'iter_4.pth') in warning[0]
    assert f'--resume {copy / "iter_4.pth"}' in warning[0]
    # Nothing to say when the pointer stays inside.
    runner = locked_run(original, max_iters=6)
    runner._resume = True
    warnings = warnings_of(runner)
    runner.train()
    assert not [m for m in warnings if 'points outside' in m]
