"""NaN loss: the run stops at that iteration, writes nothing poisoned and
names the checkpoint to go back to (NaNGuardHook)."""
import os
import os.path as osp

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import Runner

from mmpeft.engine import NaNGuardHook, NonFiniteLossError
from test_reliability_support import tiny_method_cfg, toy_runner


def checkpoints(work_dir):
    """Training checkpoints, without AdapterMergeHook's companions."""
    return sorted(
        p for p in os.listdir(work_dir) if p.endswith('.pth')
        and not p.endswith(('_deploy.pth', '_adapters.pth')))


def test_nan_loss_stops_the_run_before_saving_it(tmp_path):
    # The loss and the gradient of iteration 3 are NaN, so is every weight
    # after that step; iteration 3 would be checkpointed (interval 1).
    runner = toy_runner(tmp_path, checkpoint=dict(interval=1), poison_at=3,
                        custom_hooks=[dict(type='NaNGuardHook')])
    with pytest.raises(NonFiniteLossError) as error:
        runner.train()
    message = str(error.value)
    assert 'not finite at iteration 3' in message
    assert 'loss=nan' in message
    assert f'--resume {osp.join(str(tmp_path), "iter_2.pth")}' in message
    assert 'learning rate' in message and 'clip_grad' in message
    assert checkpoints(tmp_path) == ['iter_1.pth', 'iter_2.pth']
    last = torch.load(tmp_path / 'iter_2.pth', weights_only=False)
    assert all(v.isfinite().all() for v in last['state_dict'].values())


def test_nan_before_any_checkpoint_says_so(tmp_path):
    runner = toy_runner(tmp_path, poison_at=1,
                        custom_hooks=[dict(type='NaNGuardHook')])
    with pytest.raises(NonFiniteLossError,
                       match='iteration 1.*No checkpoint was saved'):
        runner.train()
    assert checkpoints(tmp_path) == []


def test_patience_tolerates_isolated_non_finite_losses(tmp_path):
    # Iteration 2 reports a NaN loss whose gradient is finite (as when an
    # AMP loss scaler skips an overflowing step): patience=2 lets it pass.
    toy_runner(tmp_path / 'patient', nan_losses=[2],
               custom_hooks=[dict(type='NaNGuardHook', patience=2)]).train()
    assert checkpoints(tmp_path / 'patient') == ['iter_4.pth']
    with pytest.raises(NonFiniteLossError, match='iteration 2'):
        toy_runner(tmp_path / 'strict', nan_losses=[2],
                   custom_hooks=[dict(type='NaNGuardHook')]).train()
    with pytest.raises(NonFiniteLossError, match='iteration 3'):
        toy_runner(tmp_path / 'twice', nan_losses=[2, 3], custom_hooks=[
            dict(type='NaNGuardHook', patience=2)]).train()


@HOOKS.register_module()
class BreakWeightsAt(Hook):
    """Weights go NaN after the loss of iteration ``at`` was checked."""

    def __init__(self, at):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 == self.at:
            with torch.no_grad():
                runner.model.linear.weight.fill_(float('inf'))


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    runner = toy_runner(
        tmp_path, checkpoint=dict(interval=1),
        custom_hooks=[dict(type='NaNGuardHook'),
                      dict(type='BreakWeightsAt', at=2)])
    with pytest.raises(NonFiniteLossError) as error:
        runner.train()
    message = str(error.value)
    assert '1 trainable weights are not finite at iteration 2' in message
    assert 'linear.weight' in message and 'was not written' in message
    assert f'--resume {osp.join(str(tmp_path), "iter_1.pth")}' in message
    assert checkpoints(tmp_path) == ['iter_1.pth']


def test_bad_patience_is_rejected():
    with pytest.raises(ValueError, match='patience must be an integer >= 1'):
        NaNGuardHook(patience=0)


@HOOKS.register_module()
class PoisonAdapterAt(Hook):
    """A diverging adapter: NaN in one Mona weight before iteration ``at``."""

    def __init__(self, at):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at:
            adapter = runner.model.backbone.stages[0].blocks[0].attn_adapter
            with torch.no_grad():
                adapter.project1.weight[0, 0] = float('nan')


def test_detector_run_stops_at_nan(demo_data, tmp_path):
    """A real Mona Faster R-CNN run through mmdet's losses."""
    cfg = tiny_method_cfg('mona', demo_data, tmp_path, max_iters=3,
                          checkpoint_interval=1)
    cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
        dict(type='NaNGuardHook'), dict(type='PoisonAdapterAt', at=2)]
    with pytest.raises(NonFiniteLossError) as error:
        Runner.from_cfg(cfg).train()
    message = str(error.value)
    assert 'not finite at iteration 2' in message
    assert 'loss_cls=nan' in message
    assert f'--resume {osp.join(str(tmp_path), "iter_1.pth")}' in message
    assert checkpoints(tmp_path) == ['iter_1.pth']
