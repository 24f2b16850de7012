"""A diverged run can be recovered by doing what NaNGuardHook says: its
error names the images of the batch and prints a command whose lower
learning rate really applies on resume (ResumeLRHook / --resume-lr; a lower
optimizer.lr in the config is overridden by the checkpoint's), from a
checkpoint saved before the loss started to explode."""
import os.path as osp
import re
import shlex
import sys

import pytest
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from divergence_toy import (LR, MAX_ITERS, NAN_AT, diverging_runner,
                            sgd_step)
from helpers import load_tool
from mmpeft.engine import NonFiniteLossError, ResumeLRHook
from test_reliability_support import (load_checkpoint, output_tail, run_tool,
                                      toy_runner)

TESTS = osp.dirname(osp.abspath(__file__))
CONFIG = f'''
custom_imports = dict(imports=['mmpeft', 'divergence_toy'],
                      allow_failed_imports=False)
default_scope = 'mmengine'
model = dict(type='GradualDivergence')
train_dataloader = dict(
    dataset=dict(type='OnesWithPaths'),
    sampler=dict(type='InfiniteSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'), batch_size=2, num_workers=0)
optim_wrapper = dict(optimizer=dict(type='SGD', lr={LR}))
train_cfg = dict(by_epoch=False, max_iters={MAX_ITERS})
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5),
    logger=dict(type='LoggerHook', interval=5))
log_processor = dict(by_epoch=False)
custom_hooks = [dict(type='NaNGuardHook')]
'''


@pytest.fixture
def diverging(tmp_path):
    config = tmp_path / 'diverging.py'
    config.write_text(CONFIG)
    return str(config), tmp_path / 'work'


def train(config, work_dir, *args):
    return run_tool(['python', 'tools/train.py', config, '--work-dir',
                     str(work_dir), *args], pythonpath=[TESTS])


@pytest.mark.slow
def test_following_the_advice_after_a_gradual_divergence(diverging):
    """The loss grows for ~25 iterations, then overflows at iteration 63
    (divergence_toy.py). The newest finite checkpoint, iter_60.pth, was
    saved while it exploded and diverges again at 0.21: the advice names
    iter_55.pth, and following it trains on at finite losses."""
    config, work_dir = diverging
    proc = train(config, work_dir)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and 'NonFiniteLossError' in out, \
        output_tail(proc)
    assert f'not finite at iteration {NAN_AT}' in out
    # Iteration 63 reads samples 124, 125 of 0..7 repeated: 4 and 5.
    assert 'images/img_4.jpg, images/img_5.jpg' in out
    command = re.search(r'tools/train\.py CONFIG (--resume \S+ '
                        r'--resume-lr \S+)', out)
    assert command, output_tail(proc)
    args = shlex.split(command.group(1))
    assert args[1] == str(work_dir / 'iter_55.pth') and args[3] == '0.21'
    assert 'iter_60.pth (218)' in out  # named as saved while exploding

    # What the guard named before: the newest finite checkpoint. Its weight
    # is out of reach of the lower lr, so the advice looped.
    with pytest.raises(NonFiniteLossError,
                       match=f'not finite at iteration {NAN_AT}'):
        diverging_runner(
            work_dir.parent / 'newest_finite',
            resume_from=str(work_dir / 'iter_60.pth'),
            custom_hooks=[dict(type='ResumeLRHook', lr=LR / 10)]).train()

    # mmengine puts the checkpoint's lr back: a lower optimizer.lr in the
    # config does not help, the run diverges again.
    stock = train(config, work_dir, '--resume', args[1], '--cfg-options',
                  f'optim_wrapper.optimizer.lr={LR / 10}')
    assert stock.returncode != 0 and f'not finite at iteration {NAN_AT}' in (
        stock.stdout + stock.stderr), output_tail(stock)

    resumed = train(config, work_dir, *args)
    assert resumed.returncode == 0, output_tail(resumed)
    assert 'learning rate 2.1 -> 0.21' in resumed.stdout + resumed.stderr
    final = load_checkpoint(str(work_dir / f'iter_{MAX_ITERS}.pth'))
    w = load_checkpoint(args[1])['state_dict']['w'].item()
    for _ in range(MAX_ITERS - 55):
        w = sgd_step(w, LR / 10)
    assert final['state_dict']['w'].item() == pytest.approx(w, rel=1e-4)
    # The last 10 losses are finite and back at the healthy level (the
    # level of the first run, carried by the checkpoint).
    record = final['meta']['nan_guard']
    assert not record['exploding'] and len(record['recent']) == 10
    assert record['level'] == pytest.approx(0.5, rel=1e-3)
    assert record['loss'] < 1.01 * record['level']
    assert final['optimizer']['param_groups'][0]['lr'] == pytest.approx(0.21)


def test_resume_lr_needs_resume(diverging, monkeypatch):
    config, _ = diverging
    monkeypatch.setattr(sys, 'argv', ['train.py', config, '--resume-lr',
                                      '0.1'])
    with pytest.raises(SystemExit, match='--resume-lr sets the learning rate '
                       'of a resumed run: add --resume'):
        load_tool('train').main()


@HOOKS.register_module()
class RecordLR(Hook):
    """The learning rates each iteration trained with."""

    def __init__(self):
        self.lrs = {}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.lrs[runner.iter + 1] = [
            g['lr'] for g in runner.optim_wrapper.param_groups]


def scheduled_run(work_dir, resume_from=None, resume_lr=None):
    """8 iterations: linear warm-up over 3, then cosine down to 2e-3 (the
    cosine moves towards an absolute eta_min, which must scale too)."""
    hooks = [dict(type='RecordLR')]
    if resume_lr is not None:
        hooks.append(dict(type='ResumeLRHook', lr=resume_lr))
    runner = toy_runner(work_dir, max_iters=8, checkpoint=dict(interval=4),
                        custom_hooks=hooks)
    runner.param_schedulers = [
        dict(type='LinearLR', start_factor=0.25, by_epoch=False, begin=0,
             end=3),
        dict(type='CosineAnnealingLR', T_max=5, eta_min=2e-3, by_epoch=False,
             begin=3, end=8)]
    if resume_from:
        runner._resume, runner._load_from = True, resume_from
    runner.train()
    (record, ) = [h for h in runner.hooks if isinstance(h, RecordLR)]
    return record.lrs


def test_resume_lr_scales_the_rest_of_the_schedule(tmp_path):
    reference = scheduled_run(tmp_path / 'reference')
    resumed = scheduled_run(tmp_path / 'resumed',
                            resume_from=str(tmp_path / 'reference' /
                                            'iter_4.pth'),
                            resume_lr=reference[5][0] / 10)
    assert sorted(resumed) == [5, 6, 7, 8]
    for step in resumed:  # the same schedule, a tenth of it
        assert resumed[step][0] == pytest.approx(reference[step][0] / 10)
    assert reference[8][0] < reference[5][0]  # the cosine did move


def test_resume_lr_must_be_positive():
    for bad in (0, -1e-3, float('inf'), '1e-3'):
        with pytest.raises(ValueError, match='lr must be a positive'):
            ResumeLRHook(lr=bad)
