"""Resume a run from a checkpoint taken mid-way (MiMi: after a pruning
round) and land on the uninterrupted run's final state bit for bit.

Every method's tiny detector, in process: a fresh Runner resumes from a
copy of the uninterrupted run's mid-way checkpoint (what a run killed right
after saving it leaves). Mona and MiMi through tools/train.py: a run really
SIGKILLed after that checkpoint, then ``--resume``. A toy model covers both
loop kinds with and without data workers in seconds. Without ExactResumeHook
the stock resume is shown not to be exact: the random generators are not in
the checkpoint. The detector runs are marked slow.
"""
import copy
import os.path as osp
import shutil

import numpy as np
import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

from test_reliability_support import (METHODS, add_custom_hooks,
                                      assert_same_tensors, load_checkpoint,
                                      output_tail, run_tool, tiny_method_cfg,
                                      write_module)

ITERS = 2
CRASH_AT = 1  # checkpoint, validation and MiMi pruning interval


def resume_cfg(method, demo_data, work_dir, exact=True, validate=False):
    cfg = tiny_method_cfg(
        method, demo_data, work_dir, max_iters=ITERS,
        checkpoint_interval=CRASH_AT, validate=validate, mimi_sigma_target=16,
        mimi_interval=CRASH_AT)
    if exact:
        add_custom_hooks(cfg, dict(type='ExactResumeHook'))
    return cfg


def train(cfg, name, resume_from=None):
    cfg = copy.deepcopy(cfg)
    cfg.experiment_name = name  # a fresh MessageHub / logger per run
    cfg.resume = resume_from is not None
    cfg.load_from = resume_from
    Runner.from_cfg(cfg).train()


def final_state(work_dir):
    checkpoint = load_checkpoint(osp.join(work_dir, f'iter_{ITERS}.pth'))
    optimizer = checkpoint['optimizer']['state']
    return checkpoint, {
        f'{index}.{key}': value
        for index, state in optimizer.items()
        for key, value in state.items() if torch.is_tensor(value)
    }


def resume_from_midway(reference, cfg, name):
    """Resume ``cfg`` from a copy of ``reference``'s mid-way checkpoint."""
    midway = osp.join(cfg.work_dir, f'iter_{CRASH_AT}.pth')
    shutil.copytree(reference.work_dir, cfg.work_dir, ignore=lambda _, names:
                    [n for n in names if n != f'iter_{CRASH_AT}.pth'])
    train(cfg, name, resume_from=midway)


@pytest.mark.slow
@pytest.mark.parametrize('method', METHODS)
def test_resume_reproduces_uninterrupted_run(method, demo_data, tmp_path):
    # Mona also validates after the mid-way checkpoint: the uninterrupted
    # run's validation must not shift the random stream of training.
    validate = method == 'mona'
    reference = resume_cfg(method, demo_data, tmp_path / 'reference',
                           validate=validate)
    train(reference, f'{method}_reference')
    resumed = resume_cfg(method, demo_data, tmp_path / 'resumed',
                         validate=validate)
    resume_from_midway(reference, resumed, f'{method}_resumed')

    ours, our_optim = final_state(resumed.work_dir)
    theirs, their_optim = final_state(reference.work_dir)
    assert_same_tensors(ours['state_dict'], theirs['state_dict'])
    assert_same_tensors(our_optim, their_optim)  # AdamW moments
    if method == 'mimi':
        # Round 1 ran before the mid-way checkpoint, round 2 after resuming.
        midway = load_checkpoint(
            osp.join(resumed.work_dir, f'iter_{CRASH_AT}.pth'))
        assert midway['meta']['mimi']['round'] == 1
        assert ours['meta']['mimi'] == theirs['meta']['mimi']
        assert ours['meta']['mimi']['round'] == 2


@pytest.mark.slow
def test_stock_resume_is_not_exact(demo_data, tmp_path):
    """What ExactResumeHook fixes: a stock resume re-seeds from the config,
    so the dropout / drop-path / sampler draws after the resume differ."""
    reference = resume_cfg('mona', demo_data, tmp_path / 'reference',
                           exact=False)
    train(reference, 'stock_reference')
    resumed = resume_cfg('mona', demo_data, tmp_path / 'resumed', exact=False)
    resume_from_midway(reference, resumed, 'stock_resumed')
    ours, _ = final_state(resumed.work_dir)
    theirs, _ = final_state(reference.work_dir)
    assert any(not torch.equal(ours['state_dict'][k], theirs['state_dict'][k])
               for k in theirs['state_dict'])


# Imported by the config in the tools/train.py subprocesses.
KILL_PROBE = '''
    import os
    import signal

    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS


    @HOOKS.register_module()
    class SigkillAfterCheckpoint(Hook):
        """SIGKILL this process after CheckpointHook saved iteration ``at``
        (and, for MiMi, after that iteration's pruning round)."""
        priority = 'LOWEST'

        def __init__(self, at):
            self.at = at

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            if runner.iter + 1 == self.at:
                os.kill(os.getpid(), signal.SIGKILL)
'''


@pytest.mark.slow
@pytest.mark.parametrize('method', ['mona', 'mimi'])
def test_sigkilled_run_resumes_through_tools(method, demo_data, tmp_path):
    write_module(str(tmp_path), 'kill_probe', KILL_PROBE)
    runs = {}
    for run, hooks in (('reference', []),
                       ('killed', [dict(type='SigkillAfterCheckpoint',
                                        at=CRASH_AT)])):
        cfg = add_custom_hooks(
            resume_cfg(method, demo_data, tmp_path / run), *hooks)
        cfg.custom_imports = dict(imports=['mmpeft', 'kill_probe'],
                                  allow_failed_imports=False)
        runs[run] = str(tmp_path / f'{run}.py')
        cfg.dump(runs[run])

    def train_tool(config, *args):
        return run_tool(['python', 'tools/train.py', config, *args],
                        pythonpath=[str(tmp_path)])

    proc = train_tool(runs['reference'])
    assert proc.returncode == 0, output_tail(proc)
    proc = train_tool(runs['killed'])
    assert proc.returncode == -9, output_tail(proc)
    killed_dir = tmp_path / 'killed'
    assert (killed_dir / f'iter_{CRASH_AT}.pth').exists()
    assert not (killed_dir / f'iter_{ITERS}.pth').exists()

    # Resume from the latest checkpoint (the killing hook is disarmed by
    # starting past its iteration).
    proc = train_tool(runs['killed'], '--resume')
    assert proc.returncode == 0, output_tail(proc)
    assert f'resumed epoch: 0, iter: {CRASH_AT}' in proc.stdout + proc.stderr

    ours, our_optim = final_state(str(killed_dir))
    theirs, their_optim = final_state(str(tmp_path / 'reference'))
    assert_same_tensors(ours['state_dict'], theirs['state_dict'])
    assert_same_tensors(our_optim, their_optim)


# ------------------------------------------------ both loop kinds, workers
class NoisyRows(Dataset):
    """Rows with NumPy noise drawn at load time (an augmentation)."""

    def __len__(self):
        return 6

    def __getitem__(self, index):
        noise = torch.from_numpy(np.random.randn(4)).float()
        return dict(inputs=torch.full((4, ), float(index)) + noise)


class DropoutRegressor(BaseModel):

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 16)
        self.dropout = nn.Dropout(0.5)
        self.out = nn.Linear(16, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        x = self.dropout(self.hidden(torch.stack(inputs)).relu())
        return dict(loss=self.out(x).pow(2).mean())


def toy_run(work_dir, by_epoch, num_workers, exact=True, resume_from=None):
    """3 epochs of 3 iterations, checkpoint after every epoch (iteration 3,
    6, 9), shuffled batches of noisy rows, dropout."""
    train_cfg = dict(by_epoch=True, max_epochs=3) if by_epoch else dict(
        by_epoch=False, max_iters=9)
    runner = Runner(
        model=DropoutRegressor(),
        work_dir=str(work_dir),
        experiment_name=f'{osp.basename(str(work_dir))}_{resume_from}',
        train_dataloader=dict(
            dataset=NoisyRows(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='pseudo_collate'),
            batch_size=2,
            num_workers=num_workers),
        optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=train_cfg,
        default_hooks=dict(
            checkpoint=dict(
                type='CheckpointHook', by_epoch=by_epoch,
                interval=1 if by_epoch else 3)),
        custom_hooks=[dict(type='ExactResumeHook')] if exact else [],
        randomness=dict(seed=0),
        resume=resume_from is not None,
        load_from=resume_from,
        log_level='WARNING')
    runner.train()
    return runner.model.state_dict()


@pytest.mark.parametrize('by_epoch', [True, False], ids=['epochs', 'iters'])
@pytest.mark.parametrize('num_workers', [0, 1])
def test_toy_resume_is_exact_for_both_loops(by_epoch, num_workers, tmp_path):
    reference = toy_run(tmp_path / 'reference', by_epoch, num_workers)
    midway = 'epoch_1.pth' if by_epoch else 'iter_3.pth'
    resumed = toy_run(tmp_path / 'resumed', by_epoch, num_workers,
                      resume_from=str(tmp_path / 'reference' / midway))
    assert_same_tensors(resumed, reference)
    if by_epoch and not num_workers:
        stock = toy_run(tmp_path / 'stock', by_epoch, 0, exact=False)
        stock_resumed = toy_run(
            tmp_path / 'stock_resumed', by_epoch, 0, exact=False,
            resume_from=str(tmp_path / 'stock' / midway))
        assert not all(
            torch.equal(stock_resumed[k], stock[k]) for k in stock)
