"""Files written by mmpeft 0.1 still load and give the same outputs.

tests/fixtures/v0_1/<method>/ holds what a 2-iteration run of the tiny UperNet
configs of tests/peft_tiny.py wrote with mmpeft 0.1 (commit be9aedf, the
version before the placement rewrite): the training config and checkpoint,
the deploy checkpoint and config, the adapter-only file, and the seg logits
of the training and deploy models on a fixed input (``outputs.pth``). MiMi
files of 0.1 used the post-residual placement: they load with
``placement='post'``, and the new default (series) refuses their adapters.
"""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer, MessageHub

from mmpeft.engine import AdapterCheckpointError, load_adapter_checkpoint
from mmpeft.engine.checkpoint_io import load_file
from mmpeft.engine.export import build_from_config

FIXTURES = osp.join(osp.dirname(__file__), 'fixtures', 'v0_1')
METHODS = ('mona', 'repadapter', 'mimi')


def fixture(method, name):
    return osp.join(FIXTURES, method, name)


def load_state(path):
    """The safe loader of every mmpeft tool (weights only: 0.1's training
    checkpoints need no pickle opt-in)."""
    return load_file(path)


def config(method, name):
    cfg = Config.fromfile(fixture(method, name))
    if method == 'mimi':
        cfg.model.backbone.placement = 'post'
    return cfg


def logits(model):
    torch.manual_seed(1)
    with torch.no_grad():
        model.eval()
        return model(torch.randn(1, 3, 32, 32), mode='tensor')


@pytest.mark.parametrize('method', METHODS)
def test_training_checkpoint_gives_the_same_outputs(method):
    model = build_from_config(config(method, 'train.py'))
    model.load_state_dict(load_state(fixture(method, 'iter_2.pth'))
                          ['state_dict'], strict=True)
    expected = torch.load(fixture(method, 'outputs.pth'))['train']
    torch.testing.assert_close(logits(model), expected, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize('method', METHODS)
def test_deploy_checkpoint_gives_the_same_outputs(method):
    model = build_from_config(config(method, 'iter_2_deploy.py'))
    model.load_state_dict(load_state(fixture(method, 'iter_2_deploy.pth'))
                          ['state_dict'], strict=True)
    expected = torch.load(fixture(method, 'outputs.pth'))['deploy']
    torch.testing.assert_close(logits(model), expected, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize('method', METHODS)
def test_adapter_file_loads_on_its_base(method):
    """The training checkpoint is the base (it holds the frozen weights);
    the adapter file, checked by method, adapter_cfg and base hash, restores
    the trained adapters over re-initialised ones."""
    model = build_from_config(config(method, 'train.py'))
    state = load_state(fixture(method, 'iter_2.pth'))['state_dict']
    adapters = load_state(fixture(method, 'iter_2_adapters.pth'))
    base = {k: v for k, v in state.items() if k not in adapters['state_dict']}
    model.load_state_dict(base, strict=False)
    load_adapter_checkpoint(model, fixture(method, 'iter_2_adapters.pth'))
    expected = torch.load(fixture(method, 'outputs.pth'))['train']
    torch.testing.assert_close(logits(model), expected, rtol=1e-5,
                               atol=1e-5)


def test_mimi_files_of_the_post_placement_are_refused_by_the_series_one():
    cfg = Config.fromfile(fixture('mimi', 'train.py'))  # default placement
    model = build_from_config(cfg)
    model.load_state_dict(
        load_state(fixture('mimi', 'iter_2.pth'))['state_dict'], strict=True)
    with pytest.raises(AdapterCheckpointError, match='adapter_cfg'):
        load_adapter_checkpoint(model, fixture('mimi', 'iter_2_adapters.pth'))


@pytest.mark.parametrize('method', METHODS)
def test_training_checkpoint_message_hub_is_rebuilt_as_written(method):
    """The message hub of 0.1's training checkpoints, rebuilt from checked
    plain data by the safe loader, holds what a full unpickle of these
    trusted files gives, and a message hub resumes from it."""
    path = fixture(method, 'iter_2.pth')
    ours = load_state(path)['message_hub']
    theirs = torch.load(path, weights_only=False)['message_hub']
    assert ours['runtime_info'] == theirs['runtime_info']
    assert ours['log_scalars'].keys() == theirs['log_scalars'].keys()
    for key, buffer in theirs['log_scalars'].items():
        rebuilt = ours['log_scalars'][key]
        assert type(rebuilt) is HistoryBuffer, key
        assert rebuilt.max_length == buffer.max_length
        for read, written in zip(rebuilt.data, buffer.data):  # same numbers
            assert read.dtype == written.dtype
            np.testing.assert_array_equal(read, written)
    hub = MessageHub.get_instance(f'v0_1_{method}')
    hub.load_state_dict(ours)
    hub.update_scalar('train/loss', 1.0)
    losses = theirs['log_scalars']['train/loss'].data[0]
    assert hub.get_scalar('train/loss').mean() == pytest.approx(
        (losses.sum() + 1) / (len(losses) + 1))
