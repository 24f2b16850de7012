"""No file is lost: AdapterMergeHook's companions always exist and hold
their own checkpoint's weights, a killed save's temporary files are cleaned
up, and tools/merge_adapters.py never overwrites its input and checks what
it wrote from disk."""
import hashlib
import logging
import os
import os.path as osp
import shutil
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from helpers import load_tool
from mmpeft.engine.checkpoint_io import (CheckpointMismatchError,
                                         CorruptCheckpointError,
                                         NonFiniteCheckpointError)
from mmpeft.engine.export import build_from_config, deploy_model
from peft_tiny import mona_seg_cfg
from test_reliability_support import assert_same_tensors, load_checkpoint

ITERS = 3


def run_cfg(demo_data, work_dir, max_iters=ITERS):
    """A Mona run checkpointing every iteration, with a learning rate that
    moves the adapters visibly between checkpoints."""
    cfg = mona_seg_cfg(demo_data, work_dir, max_iters=max_iters)
    cfg.optim_wrapper.optimizer.lr = 1e-2
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint.update(interval=1)
    cfg.custom_hooks.append(dict(type='WorkDirLockHook'))
    return cfg


@pytest.fixture(scope='module')
def trained(demo_data, tmp_path_factory):
    """(config file, work dir) of a 3-iteration run, one checkpoint each."""
    work_dir = tmp_path_factory.mktemp('three_checkpoints')
    cfg = run_cfg(demo_data, work_dir)
    Runner.from_cfg(cfg).train()
    config = str(work_dir / 'train.py')
    cfg.dump(config)
    return config, work_dir


def state(path):
    return load_checkpoint(str(path))['state_dict']


def deploy_of(config, checkpoint):
    """The merged weights of the training model loaded from ``checkpoint``."""
    model = build_from_config(Config.fromfile(config))
    model.load_state_dict(state(checkpoint), strict=True)
    return deploy_model(model).state_dict()


def test_each_checkpoint_has_companions_of_its_own_weights(trained):
    config, work_dir = trained
    adapters = {}
    for n in range(1, ITERS + 1):
        full = state(work_dir / f'iter_{n}.pth')
        adapters[n] = state(work_dir / f'iter_{n}_adapters.pth')
        assert_same_tensors(adapters[n],
                            {k: full[k] for k in adapters[n]})
        deploy_cfg = Config.fromfile(str(work_dir / f'iter_{n}_deploy.py'))
        assert deploy_cfg.load_from == str(work_dir / f'iter_{n}_deploy.pth')
        deployed = build_from_config(deploy_cfg)
        deployed.load_state_dict(state(deploy_cfg.load_from), strict=True)
        assert_same_tensors(deployed.state_dict(),
                            deploy_of(config, work_dir / f'iter_{n}.pth'))
    # The checkpoints differ, so a companion taken one step late would not
    # match its own checkpoint.
    for n in range(1, ITERS):
        assert any(not torch.equal(adapters[n][k], adapters[n + 1][k])
                   for k in adapters[n])


def digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_resume_writes_missing_companions_and_removes_temp_files(
        trained, demo_data, tmp_path):
    """A run killed between iter_N.pth and its companions (or during a save)
    resumes: the missing files appear, from their own checkpoint, the others
    are kept byte for byte, the killed saves' temporary files go."""
    _, original = trained
    work_dir = tmp_path / 'killed'
    shutil.copytree(original, work_dir)
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_3.pth'))
    lost = ['iter_1_deploy.pth', 'iter_1_deploy.py', 'iter_2_adapters.pth',
            'iter_3_deploy.py']
    for name in lost:
        os.remove(work_dir / name)
    kept = {name: digest(work_dir / name) for name in (
        'iter_1_adapters.pth', 'iter_2_deploy.pth', 'iter_2_deploy.py',
        'iter_3_deploy.pth', 'iter_3_adapters.pth')}
    mtimes = {name: os.stat(work_dir / name).st_mtime_ns for name in kept}
    temps = ['.iter_4.pth.4242.0a1b2c3d.tmp',         # mmpeft.compat's save
             '.iter_3_adapters.k2_x9q1z.tmp.pth']     # export.atomic_write
    foreign = ['notes.tmp', '.mine.tmp', '.iter_3.pth.swp']
    for name in temps + foreign:
        (work_dir / name).write_bytes(b'partial')

    cfg = run_cfg(demo_data, work_dir, max_iters=ITERS + 1)
    cfg.resume = True
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == ITERS + 1

    for name in lost:
        assert (work_dir / name).exists(), name
    for name in kept:
        assert digest(work_dir / name) == kept[name], name
        assert os.stat(work_dir / name).st_mtime_ns == mtimes[name], name
    # Rewritten from their own checkpoint: what the first run wrote.
    for name in ('iter_1_deploy.pth', 'iter_2_adapters.pth'):
        assert_same_tensors(state(work_dir / name), state(original / name))
    for n in (1, 3):
        written = Config.fromfile(str(work_dir / f'iter_{n}_deploy.py'))
        first = Config.fromfile(str(original / f'iter_{n}_deploy.py'))
        assert written.load_from == str(work_dir / f'iter_{n}_deploy.pth')
        assert written.model.to_dict() == first.model.to_dict()
    assert all((work_dir / f'iter_4{s}').exists()
               for s in ('_deploy.pth', '_deploy.py', '_adapters.pth'))
    names = os.listdir(work_dir)
    assert not set(temps) & set(names)
    assert set(foreign) <= set(names)
    assert 'mmpeft_run.lock' not in names  # released at the end


def test_checkpoint_of_another_model_gets_a_warning_not_a_crash(
        trained, demo_data, tmp_path):
    _, original = trained
    work_dir = tmp_path / 'mixed'
    shutil.copytree(original, work_dir)
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_3.pth'))
    torch.save(dict(meta=dict(iter=5, epoch=0),
                    state_dict=dict(other=torch.zeros(1))),
               work_dir / 'iter_5.pth')
    cfg = run_cfg(demo_data, work_dir, max_iters=ITERS + 1)
    cfg.resume = True
    cfg.load_from = str(work_dir / 'iter_3.pth')
    runner = Runner.from_cfg(cfg)
    messages = []
    runner.logger.addHandler(Collect(messages))
    runner.train()
    warning = [m for m in messages if 'iter_5.pth' in m]
    assert warning and 'tools/merge_adapters.py' in warning[0]
    assert not (work_dir / 'iter_5_deploy.pth').exists()


class Collect(logging.Handler):

    def __init__(self, messages):
        super().__init__()
        self.messages = messages

    def emit(self, record):
        self.messages.append(record.getMessage())


# ------------------------------------------------- tools/merge_adapters.py
def merge(*args, monkeypatch, corrupt=None):
    """tools/merge_adapters.py ``args``; ``corrupt(out, config)`` runs right
    after the deploy files are written (what a bad disk or a concurrent
    writer would do)."""
    tool = load_tool('merge_adapters')
    if corrupt is not None:
        write_deploy = tool.write_deploy

        def write_then_corrupt(model, cfg, out, out_config, meta):
            merged = write_deploy(model, cfg, out, out_config, meta)
            corrupt(out, out_config)
            return merged

        monkeypatch.setattr(tool, 'write_deploy', write_then_corrupt)
    monkeypatch.setattr(sys, 'argv', ['merge_adapters.py', *map(str, args)])
    tool.main()


def test_merge_refuses_a_py_output(trained, tmp_path, monkeypatch):
    config, work_dir = trained
    with pytest.raises(SystemExit, match=r'deploy\.py.*Pass .*deploy\.pth'):
        merge(config, work_dir / 'iter_2.pth', tmp_path / 'out' / 'deploy.py',
              monkeypatch=monkeypatch)
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('case', ['out_is_checkpoint', 'adapters_is_checkpoint',
                                  'adapters_is_out', 'config_is_deploy_config',
                                  'out_links_to_checkpoint'])
def test_merge_never_overwrites_its_input(case, trained, tmp_path,
                                          monkeypatch):
    config, work_dir = trained
    ckpt = tmp_path / 'iter_2.pth'
    shutil.copy(work_dir / 'iter_2.pth', ckpt)
    cfg_file = tmp_path / 'train.py'
    shutil.copy(config, cfg_file)
    link = tmp_path / 'link.pth'
    link.symlink_to(ckpt)
    out, extra = tmp_path / 'deploy.pth', []
    if case == 'out_is_checkpoint':
        out = ckpt
    elif case == 'adapters_is_checkpoint':
        extra = ['--adapters', ckpt]
    elif case == 'adapters_is_out':
        extra = ['--adapters', out]
    elif case == 'config_is_deploy_config':
        out = tmp_path / 'train.pth'  # its config would be train.py
    else:
        out = link
    before = {p: digest(p) for p in (ckpt, cfg_file)}
    with pytest.raises(SystemExit, match='same file as the .*destroy'):
        merge(cfg_file, ckpt, out, *extra, monkeypatch=monkeypatch)
    assert {p: digest(p) for p in before} == before
    assert not (tmp_path / 'deploy.pth').exists()


def test_merge_checks_the_files_on_disk(trained, tmp_path, monkeypatch):
    config, work_dir = trained
    ckpt = work_dir / 'iter_2.pth'
    out = tmp_path / 'deploy.pth'

    def change_a_tensor(out, _):
        saved = torch.load(out)
        key = sorted(saved['state_dict'])[0]
        saved['state_dict'][key] = saved['state_dict'][key] + 1
        torch.save(saved, out)

    with pytest.raises(CorruptCheckpointError,
                       match='corrupt since it was written'):  # its SHA-256
        merge(config, ckpt, out, monkeypatch=monkeypatch,
              corrupt=change_a_tensor)

    def change_a_tensor_and_drop_its_digest(out, config):
        change_a_tensor(out, config)
        os.remove(f'{out}.sha256')

    with pytest.raises(SystemExit, match='read back differs'):
        merge(config, ckpt, out, monkeypatch=monkeypatch,
              corrupt=change_a_tensor_and_drop_its_digest)

    def drop_a_tensor(out, _):
        saved = torch.load(out)
        saved['state_dict'].pop(sorted(saved['state_dict'])[0])
        torch.save(saved, out)
        os.remove(f'{out}.sha256')

    with pytest.raises(SystemExit, match='does not load strictly'):
        merge(config, ckpt, out, monkeypatch=monkeypatch,
              corrupt=drop_a_tensor)

    def training_config_instead(_, out_config):
        shutil.copy(config, out_config)

    with pytest.raises(SystemExit, match='loads .*not .*deploy.pth'):
        merge(config, ckpt, out, monkeypatch=monkeypatch,
              corrupt=training_config_instead)

    # Untouched, the same files pass, and the adapter file is checked too
    # (--force: deploy.py is the training config the last case put there).
    merge(config, ckpt, out, '--adapters', tmp_path / 'adapters.pth',
          '--force', monkeypatch=monkeypatch)
    assert_same_tensors(state(out), state(work_dir / 'iter_2_deploy.pth'))


def test_merge_never_replaces_a_file_it_was_not_asked_to_write(
        trained, tmp_path, monkeypatch):
    """OUT.py (the deploy config beside OUT) that exists and is not an
    earlier deploy config of OUT is refused unless --force; one of CONFIG's
    _base_ files is refused even with --force (replacing it would break the
    configs that inherit it)."""
    config, work_dir = trained
    ckpt = work_dir / 'iter_2.pth'
    bases = tmp_path / '_base_'
    bases.mkdir()
    (bases / 'runtime.py').write_text(open(config).read())
    (tmp_path / 'schedule.py').write_text(
        "_base_ = ['_base_/runtime.py']\nseed = 1\n")
    (tmp_path / 'train.py').write_text("_base_ = ['schedule.py']\n")
    files = [bases / 'runtime.py', tmp_path / 'schedule.py',
             tmp_path / 'notes.py']
    (tmp_path / 'notes.py').write_text('# my notes\n')
    before = {p: digest(p) for p in files}
    for out, flags in ((bases / 'runtime.pth', ['--force']),
                       (tmp_path / 'schedule.pth', ['--force']),
                       (tmp_path / 'schedule.pth', []),
                       (tmp_path / 'other.pth', ['--adapters', files[0],
                                                 '--force'])):
        with pytest.raises(SystemExit, match='inherits .*refused even with '
                           '--force'):
            merge(tmp_path / 'train.py', ckpt, out, *flags,
                  monkeypatch=monkeypatch)
    with pytest.raises(SystemExit, match=r'notes\.py exists.*--force'):
        merge(tmp_path / 'train.py', ckpt, tmp_path / 'notes.pth',
              monkeypatch=monkeypatch)
    assert {p: digest(p) for p in files} == before
    assert not (tmp_path / 'notes.pth').exists()
    assert Config.fromfile(str(tmp_path / 'train.py')).seed == 1

    # An earlier deploy config of the same OUT is ours to replace; --force
    # replaces any other file.
    merge(tmp_path / 'train.py', ckpt, tmp_path / 'deploy.pth',
          monkeypatch=monkeypatch)
    merge(tmp_path / 'train.py', ckpt, tmp_path / 'deploy.pth',
          monkeypatch=monkeypatch)
    merge(tmp_path / 'train.py', ckpt, tmp_path / 'notes.pth', '--force',
          monkeypatch=monkeypatch)
    assert Config.fromfile(str(tmp_path / 'notes.py')).adapters_merged


@pytest.mark.parametrize('kind', ['deploy', 'adapters'])
def test_merge_names_an_export_given_as_the_checkpoint(
        kind, trained, tmp_path, monkeypatch):
    """Not mmengine's missing-keys error: which file it is, and the
    training checkpoint to pass instead."""
    config, work_dir = trained
    export = work_dir / f'iter_2_{kind}.pth'
    with pytest.raises(CheckpointMismatchError) as error:
        merge(config, export, tmp_path / 'deploy.pth',
              monkeypatch=monkeypatch)
    message = str(error.value)
    assert str(export) in message and str(work_dir / 'iter_2.pth') in message
    assert ('nothing to merge' if kind == 'deploy' else 'adapter-only') \
        in message
    assert not (tmp_path / 'deploy.pth').exists()


def test_merge_of_nonfinite_weights_is_refused_or_kept_as_they_are(
        trained, tmp_path, monkeypatch):
    """A checkpoint with a NaN weight is an error naming the file and the
    tensor; with --allow-nonfinite it is merged, and the check of what was
    written compares bits (NaN included): the disk is not blamed."""
    config, work_dir = trained
    checkpoint = torch.load(work_dir / 'iter_2.pth', weights_only=False)
    key = next(k for k, v in checkpoint['state_dict'].items()
               if k.startswith('backbone.') and v.is_floating_point())
    checkpoint['state_dict'][key].view(-1)[:2] = float('nan')
    nan = tmp_path / 'nan.pth'
    torch.save(checkpoint, nan)
    with pytest.raises(NonFiniteCheckpointError) as error:
        merge(config, nan, tmp_path / 'deploy.pth', monkeypatch=monkeypatch)
    assert repr(str(nan)) in str(error.value)
    assert f'state_dict.{key} (2 NaN, 0 inf' in str(error.value)
    assert '--allow-nonfinite' in str(error.value)
    merge(config, nan, tmp_path / 'deploy.pth', '--allow-nonfinite',
          monkeypatch=monkeypatch)
    assert state(tmp_path / 'deploy.pth')[key].isnan().sum() == 2
