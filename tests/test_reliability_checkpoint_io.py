"""A checkpoint file is never left half-written (mmpeft.compat's shim around
mmengine's save_checkpoint: write a temporary file, then rename)."""
import os
import subprocess
import sys
import textwrap

import mmengine.runner
import mmengine.runner.checkpoint
import mmengine.runner.runner
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from mmpeft.engine.checkpoint_io import load_file
from test_reliability_support import toy_runner

save_checkpoint = mmengine.runner.checkpoint.save_checkpoint


class Unpicklable:
    """Fails in the middle of ``torch.save``, after the tensors before it
    were written."""

    def __reduce__(self):
        raise OSError('simulated failure in the middle of the write')


def big_checkpoint(value: float) -> dict:
    return dict(meta=dict(value=value),
                state_dict=dict(weight=torch.full((256, 1024), value)))


def test_every_mmengine_reference_is_wrapped():
    # Runner.save_checkpoint calls the name imported into runner.py;
    # CheckpointHook imports it from mmengine.runner at call time.
    assert save_checkpoint.mmpeft_atomic
    assert mmengine.runner.runner.save_checkpoint is save_checkpoint
    assert mmengine.runner.save_checkpoint is save_checkpoint


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / 'latest.pth'
    save_checkpoint(big_checkpoint(1.0), str(path))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask

    broken = dict(big_checkpoint(2.0), tail=Unpicklable())
    with pytest.raises(OSError, match='simulated failure'):
        save_checkpoint(broken, str(path))
    # no temporary left over; the SHA-256 still that of the previous file
    assert sorted(os.listdir(tmp_path)) == ['latest.pth', 'latest.pth.sha256']
    loaded = load_file(str(path))
    assert loaded['meta']['value'] == 1.0
    assert torch.equal(loaded['state_dict']['weight'],
                       torch.full((256, 1024), 1.0))


def test_new_file_appears_only_complete(tmp_path):
    path = tmp_path / 'iter_1.pth'
    with pytest.raises(OSError, match='simulated failure'):
        save_checkpoint(dict(big_checkpoint(1.0), tail=Unpicklable()),
                        str(path))
    assert os.listdir(tmp_path) == []


@HOOKS.register_module()
class FailSecondSave(Hook):
    """Makes the checkpoint of iteration 2 fail half-way through pickling."""

    def before_save_checkpoint(self, runner, checkpoint):
        if checkpoint['meta']['iter'] == 2:
            checkpoint['tail'] = Unpicklable()


def test_runner_overwriting_a_checkpoint_keeps_the_old_one(tmp_path):
    """CheckpointHook writing the same name every time: the failed second
    write leaves the first checkpoint whole."""
    runner = toy_runner(
        tmp_path,
        checkpoint=dict(interval=1, filename_tmpl='latest.pth'),
        custom_hooks=[dict(type='FailSecondSave')])
    with pytest.raises(OSError, match='simulated failure'):
        runner.train()
    files = sorted(p for p in os.listdir(tmp_path) if p.endswith('.pth'))
    assert files == ['latest.pth']
    assert not [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]
    checkpoint = torch.load(tmp_path / 'latest.pth', weights_only=False)
    assert checkpoint['meta']['iter'] == 1


def test_process_killed_during_write(tmp_path):
    """SIGKILL in the middle of writing: the final name still holds the
    previous, complete checkpoint (only a dot-file temporary is left)."""
    path = tmp_path / 'iter_1.pth'
    script = textwrap.dedent(f'''
        import os, signal, torch
        import mmpeft  # noqa: F401  applies the shim
        from mmengine.runner.checkpoint import save_checkpoint

        class KillMidWrite:
            def __reduce__(self):
                os.kill(os.getpid(), signal.SIGKILL)

        def checkpoint(value):
            return dict(meta=dict(value=value),
                        state_dict=dict(weight=torch.full((256, 1024), value)))

        save_checkpoint(checkpoint(1.0), {str(path)!r})
        save_checkpoint(dict(checkpoint(2.0), tail=KillMidWrite()),
                        {str(path)!r})
    ''')
    proc = subprocess.run([sys.executable, '-c', script],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    loaded = load_file(str(path))  # its SHA-256 file is still its own
    assert loaded['meta']['value'] == 1.0
    leftovers = [p for p in os.listdir(tmp_path)
                 if p not in ('iter_1.pth', 'iter_1.pth.sha256')]
    assert all(p.startswith('.iter_1.pth.') and p.endswith('.tmp')
               for p in leftovers)
