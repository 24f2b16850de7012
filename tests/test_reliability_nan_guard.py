"""NaN loss: the run stops at that iteration, writes nothing poisoned and
names the checkpoint to go back to (NaNGuardHook): the newest one saved
before the loss started to explode."""
import os
import os.path as osp
import statistics

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import Runner

from divergence_toy import LR, NAN_AT, diverging_runner, sgd_step
from mmpeft.engine import NaNGuardHook, NonFiniteLossError
from test_reliability_support import (load_checkpoint, tiny_method_cfg,
                                      toy_runner)


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


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match='patience must be an integer >= 1'):
        NaNGuardHook(patience=0)
    with pytest.raises(ValueError, match='window must be an integer >= 1'):
        NaNGuardHook(window=0)
    for factor in (1, 0.5, float('inf')):
        with pytest.raises(ValueError, match='factor must be a finite number '
                           '> 1'):
            NaNGuardHook(factor=factor)


# ------------------------------------------- a run that diverges gradually
def healthy_level(first_w=0.01, iters=NAN_AT - 1, window=10):
    """The lowest median of 10 consecutive losses of divergence_toy.py,
    replayed from its maths (in double precision)."""
    w, losses = first_w, []
    for _ in range(iters):
        losses.append((1 + w**2) / 2 + w**4 / 400)
        w = sgd_step(w, LR)
    return min(statistics.median(losses[i - window:i])
               for i in range(window, iters + 1))


def test_gradual_divergence_names_the_checkpoint_before_the_explosion(
        tmp_path):
    """The loss grows from iteration ~35 and overflows at 63; iter_60.pth
    (mean of the last 10 losses 218, last loss 2070) is finite but saved
    while exploding. The error names iter_55.pth (mean 1.64, already 3.3x
    the healthy 0.5: growing, still below 4x)."""
    with pytest.raises(NonFiniteLossError) as error:
        diverging_runner(tmp_path).train()
    message = str(error.value)
    assert f'not finite at iteration {NAN_AT}' in message
    assert (f'--resume {osp.join(str(tmp_path), "iter_55.pth")} '
            f'--resume-lr 0.21') in message
    assert 'iter_60.pth (218)' in message and 'exploding' in message
    records = {name: load_checkpoint(str(tmp_path / name))['meta']['nan_guard']
               for name in checkpoints(tmp_path)}
    assert len(records) == 12  # iter_5 ... iter_60
    assert [n for n, r in records.items() if r['exploding']] == [
        'iter_60.pth']
    level = healthy_level()
    for name, record in records.items():
        assert record['loss'] == pytest.approx(
            statistics.fmean(record['recent']))
        if name != 'iter_5.pth':  # a window of 10 losses exists
            assert record['level'] == pytest.approx(level, rel=1e-5)
            assert record['exploding'] == (record['loss'] > 4 * level)
    assert 3 * level < records['iter_55.pth']['loss'] < 4 * level
    assert records['iter_5.pth']['level'] is None
    assert records['iter_60.pth']['last_good'] == str(tmp_path / 'iter_55.pth')
    assert records['iter_55.pth']['last_good'] == str(tmp_path / 'iter_55.pth')


def test_resumed_exploding_checkpoint_still_names_the_good_one(tmp_path):
    """Auto-resume takes the newest checkpoint, an exploding one: its record
    carries the last good checkpoint and the losses into the resumed run.
    (A tenth of the lr cannot save iter_60.pth: the same NaN.)"""
    with pytest.raises(NonFiniteLossError):
        diverging_runner(tmp_path / 'run').train()
    with pytest.raises(NonFiniteLossError) as error:
        diverging_runner(
            tmp_path / 'resumed',
            resume_from=str(tmp_path / 'run' / 'iter_60.pth'),
            custom_hooks=[dict(type='ResumeLRHook', lr=LR / 10)]).train()
    message = str(error.value)
    assert f'not finite at iteration {NAN_AT}' in message
    assert (f'--resume {osp.join(str(tmp_path), "run", "iter_55.pth")} '
            f'--resume-lr 0.021') in message
    assert 'iter_60.pth (218)' in message


def test_load_from_starts_a_fresh_record(tmp_path):
    """Fine-tuning from a checkpoint (load_from, no resume) is a new run:
    its first save judges its own losses and is its own last good one."""
    with pytest.raises(NonFiniteLossError):
        diverging_runner(tmp_path / 'run').train()
    diverging_runner(tmp_path / 'fresh', lr=LR / 10, max_iters=5,
                     load_from=str(tmp_path / 'run' / 'iter_55.pth')).train()
    record = load_checkpoint(str(tmp_path / 'fresh' / 'iter_5.pth')
                             )['meta']['nan_guard']
    assert len(record['recent']) == 5 and not record['exploding']
    assert record['last_good'] == str(tmp_path / 'fresh' / 'iter_5.pth')


def test_a_deleted_last_good_checkpoint_is_not_named(tmp_path):
    """max_keep_ckpts=1 removed iter_55.pth when iter_60.pth was saved: the
    advice says so instead of naming a missing file or iter_60.pth."""
    with pytest.raises(NonFiniteLossError) as error:
        diverging_runner(tmp_path, max_keep_ckpts=1).train()
    message = str(error.value)
    assert (f'The last good checkpoint, {osp.join(str(tmp_path), "iter_55.pth")}'
            ', was deleted (CheckpointHook max_keep_ckpts') in message
    assert '--resume' not in message and 'lr=0.21' in message
    assert checkpoints(tmp_path) == ['iter_60.pth']


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
