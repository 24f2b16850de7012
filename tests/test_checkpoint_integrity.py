"""Corrupt weights are not evaluated: a checkpoint whose bytes changed since
mmpeft wrote it fails its SHA-256, and NaN / inf weights are an error naming
the file and the tensors, on every load path (the opt-out is for models that
store inf on purpose). A file asking for more memory than the machine has is
named as such, not as a truncated archive.

The damage is what a disk or a copy does: 8 bytes flipped inside a tensor's
data (0xFF: two float32 NaNs), the zip archive itself intact.
"""
import os
import os.path as osp
import shutil
import sys

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import MODELS
from mmengine.runner import CheckpointLoader

from checkpoint_support import Reduce, assert_error_shown, flip_bytes_of
from mmpeft.engine import check_resumable_file
from mmpeft.engine.checkpoint_digest import file_sha256, recorded_sha256
from mmpeft.engine.checkpoint_io import (ALLOW_NONFINITE_KEY,
                                         CheckpointReadError,
                                         CorruptCheckpointError,
                                         NonFiniteCheckpointError, load_file,
                                         set_opt_in)
from mmpeft.engine.export import read_adapter_checkpoint, save_atomic
from mmpeft.engine.runner import build_runner
from test_checkpoint_errors import toy_run  # noqa: F401  a pytest fixture
from test_reliability_support import TINY_SWIN, run_tool

NAN = "state_dict.linear.weight (2 NaN, 0 inf of 4)"


@pytest.fixture
def flipped(toy_run, tmp_path):
    """(copy of iter_2.pth with 8 bytes of linear.weight flipped, the same
    without its SHA-256 file: a checkpoint mmpeft did not write)."""
    work_dir = toy_run[2]
    paths = []
    for name in ('iter_2.pth', 'other.pth'):
        path = str(tmp_path / name)
        shutil.copy(osp.join(work_dir, 'iter_2.pth'), path)
        flip_bytes_of(path, 'linear.weight')
        paths.append(path)
    shutil.copy(osp.join(work_dir, 'iter_2.pth.sha256'), paths[0] + '.sha256')
    return paths


def test_every_saved_checkpoint_has_its_sha256(toy_run, tmp_path):
    work_dir = toy_run[2]
    for name in ('iter_1.pth', 'iter_2.pth'):
        path = osp.join(work_dir, name)
        with open(path + '.sha256') as f:  # sha256sum -c reads it
            assert f.read() == f'{file_sha256(path)}  {name}\n'
    companion = str(tmp_path / 'iter_2_adapters.pth')
    save_atomic(dict(state_dict=dict(w=torch.ones(2))), companion)
    assert recorded_sha256(companion) == file_sha256(companion)
    assert sorted(os.listdir(tmp_path)) == ['iter_2_adapters.pth',
                                            'iter_2_adapters.pth.sha256']


def test_flipped_bytes_in_a_file_we_wrote_are_named_corrupt(flipped):
    path, _ = flipped
    for load in (load_file, CheckpointLoader.load_checkpoint,
                 check_resumable_file):  # every local load path uses one
        with pytest.raises(CorruptCheckpointError) as error:
            load(path)
        message = str(error.value)
        assert repr(path) in message and 'corrupt since it was written' in \
            message and f'{path}.sha256' in message
    os.remove(path + '.sha256')  # an old file without its SHA-256 loads
    with pytest.raises(NonFiniteCheckpointError):  # ... and is checked
        load_file(path)


def pretrained(path):
    return MODELS.build(dict(type='MonaSwinTransformer', **TINY_SWIN,
                             init_cfg=ConfigDict(type='Pretrained',
                                                 checkpoint=path)))


@pytest.mark.parametrize('where', ['pretrained', 'load_from', 'resume',
                                   'adapter'])
def test_nonfinite_weights_are_refused_on_every_load_path(
        where, flipped, toy_run):
    _, path = flipped
    cfg = Config.fromfile(toy_run[1])
    with pytest.raises(NonFiniteCheckpointError) as error:
        if where == 'pretrained':
            pretrained(path).init_weights()
        elif where == 'load_from':
            cfg.load_from = path
            build_runner(cfg).test()
        elif where == 'resume':
            cfg.update(load_from=path, resume=True)
            build_runner(cfg).train()
        else:
            read_adapter_checkpoint(path)  # what --adapter reads
    message = str(error.value)
    assert repr(path) in message and NAN in message
    assert '--allow-nonfinite' in message and ALLOW_NONFINITE_KEY in message


def test_test_tool_refuses_nonfinite_weights_with_the_message_last(
        flipped, toy_run):
    directory, config, _, _ = toy_run
    _, path = flipped
    proc = run_tool([sys.executable, 'tools/test.py', config, path],
                    pythonpath=[directory])
    message = assert_error_shown(proc, 'NonFiniteCheckpointError')
    assert repr(path) in message and NAN in message


def test_allow_nonfinite_loads_with_a_warning(flipped, toy_run):
    _, path = flipped
    set_opt_in(ALLOW_NONFINITE_KEY)
    assert load_file(path)['state_dict']['linear.weight'].isnan().sum() == 2
    cfg = Config.fromfile(toy_run[1])
    cfg.load_from = path
    build_runner(cfg).test()  # what --allow-nonfinite lets through


@pytest.mark.parametrize('content,cause', [
    (Reduce(bytearray, (2**50, )), 'needs more memory than this machine has'),
    (Reduce(torch._utils._rebuild_tensor_v2,
            (torch.ones(2).untyped_storage(), 0, (2**40, ), (1, ), False,
             {})), 'contents do not rebuild'),
], ids=['memory_error', 'tensor_of_2_40_elements'])
def test_impossible_sizes_are_not_called_truncated(content, cause, tmp_path):
    """A complete archive asking for 1 PiB, or a tensor of 2^40 elements
    over 8 bytes of data: named as what it is."""
    path = str(tmp_path / 'huge.pth')
    torch.save(dict(meta=dict(note=content)), path)
    with pytest.raises(CheckpointReadError) as error:
        load_file(path)
    message = str(error.value)
    assert cause in message and repr(path) in message
    assert 'truncated' not in message
