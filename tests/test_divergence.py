"""A diverged run can be recovered by doing what NaNGuardHook says: its
error names the images of the batch and prints a command whose lower
learning rate really applies on resume (ResumeLRHook / --resume-lr; a lower
optimizer.lr in the config is overridden by the checkpoint's)."""
import os.path as osp
import re
import shlex
import sys

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from helpers import load_tool
from mmpeft.engine import ResumeLRHook
from test_reliability_support import (load_checkpoint, output_tail, run_tool,
                                      toy_runner, write_module)

# w <- w - lr * 2w: lr=2 multiplies w by -3 per step, so the loss w^2
# overflows float32 at iteration 42; lr=0.2 (a tenth) multiplies it by 0.6.
TOY = '''
    import torch
    from mmengine.model import BaseModel
    from mmengine.registry import DATASETS, MODELS
    from mmengine.structures import BaseDataElement
    from torch import nn


    @MODELS.register_module()
    class Quadratic(BaseModel):

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, inputs, data_samples=None, mode='loss'):
            return dict(loss=(self.w * torch.stack(inputs)).pow(2).mean())


    @DATASETS.register_module()
    class Ones(torch.utils.data.Dataset):

        def __len__(self):
            return 8

        def __getitem__(self, index):
            return dict(inputs=torch.ones(1), data_samples=BaseDataElement(
                metainfo=dict(img_path=f'images/img_{index}.jpg')))
'''
CONFIG = '''
custom_imports = dict(imports=['mmpeft', 'divergent_toy'],
                      allow_failed_imports=False)
default_scope = 'mmengine'
model = dict(type='Quadratic')
train_dataloader = dict(
    dataset=dict(type='Ones'),
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'), batch_size=2, num_workers=0)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=2.0))
train_cfg = dict(by_epoch=False, max_iters=60)
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=10),
    logger=dict(type='LoggerHook', interval=10))
log_processor = dict(by_epoch=False)
custom_hooks = [dict(type='NaNGuardHook')]
'''


@pytest.fixture
def diverging(tmp_path):
    write_module(str(tmp_path), 'divergent_toy', TOY)
    config = tmp_path / 'diverging.py'
    config.write_text(CONFIG)
    return str(config), tmp_path / 'work'


def train(config, work_dir, *args, pythonpath):
    return run_tool(['python', 'tools/train.py', config, '--work-dir',
                     str(work_dir), *args], pythonpath=[pythonpath])


@pytest.mark.slow
def test_following_the_printed_command_reaches_a_finite_loss(diverging):
    config, work_dir = diverging
    here = osp.dirname(config)
    proc = train(config, work_dir, pythonpath=here)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and 'NonFiniteLossError' in out, \
        output_tail(proc)
    assert 'not finite at iteration 42' in out
    # Iteration 42 is batch 41 % 4 = 1 of its epoch: samples 2 and 3.
    assert 'images/img_2.jpg, images/img_3.jpg' in out
    command = re.search(r'tools/train\.py CONFIG (--resume \S+ '
                        r'--resume-lr \S+)', out)
    assert command, output_tail(proc)
    args = shlex.split(command.group(1))
    assert args[1] == str(work_dir / 'iter_40.pth') and args[3] == '0.2'

    # mmengine puts the checkpoint's lr back: a lower optimizer.lr in the
    # config does not help, the run diverges again.
    stock = train(config, work_dir, '--resume', args[1], '--cfg-options',
                  'optim_wrapper.optimizer.lr=0.2', pythonpath=here)
    assert stock.returncode != 0 and 'not finite at iteration 42' in (
        stock.stdout + stock.stderr), output_tail(stock)

    resumed = train(config, work_dir, *args, pythonpath=here)
    assert resumed.returncode == 0, output_tail(resumed)
    assert 'learning rate 2 -> 0.2' in resumed.stdout + resumed.stderr
    final = load_checkpoint(str(work_dir / 'iter_60.pth'))
    w = final['state_dict']['w']
    assert torch.isfinite(w).all() and torch.isfinite(w.pow(2)).all()
    w_40 = load_checkpoint(args[1])['state_dict']['w']
    assert w.item() == pytest.approx(w_40.item() * 0.6**20, rel=1e-4)
    assert final['optimizer']['param_groups'][0]['lr'] == pytest.approx(0.2)


def test_resume_lr_needs_resume(diverging, monkeypatch):
    config, work_dir = diverging
    monkeypatch.syspath_prepend(osp.dirname(config))  # divergent_toy
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
