"""Tests for engine bugs that used to ship unnoticed (issue 14's injected
one-line bugs): each test names the bug it catches."""
import os
import os.path as osp
import socket
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.logging import MMLogger, MessageHub
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

import mmpeft.compat  # noqa: F401  (the checkpoint save shim)
from mmengine.runner.checkpoint import save_checkpoint
from mmpeft.engine.checkpoint_io import load_file
from mmpeft.engine import (AdapterLoadHook, ExactResumeHook, NaNGuardHook,
                           NonFiniteLossError, NotResumableError)
from mmpeft.engine import exact_resume_hook, mimi_prune_hook, nan_guard_hook
from mmpeft.engine.export import atomic_write, save_atomic
from mmpeft.models import MonaSwinTransformer
from test_convert_mona import TINY, convert_tool, official_mona_backbone
from test_mimi_prune import PRUNE, backbone_of
from test_mimi_prune import toy_runner as mimi_runner
from test_reliability_support import assert_same_tensors


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def init_gloo(rank, world_size, port):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                      RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    torch.distributed.init_process_group('gloo', rank=rank,
                                         world_size=world_size)


# ------------------------------------------- pretrained adapter weights
def test_pretrained_adapters_are_not_reinitialised(tmp_path):
    """Bug: adapters reset after a Pretrained init_cfg that holds them (a
    checkpoint of the official Mona code, converted by the tool)."""
    official = official_mona_backbone(**TINY, seed=3)
    torch.save(dict(state_dict={'backbone.' + k: v
                                for k, v in official.items()}),
               tmp_path / 'official.pth')
    path = str(tmp_path / 'converted.pth')
    convert_tool.main([str(tmp_path / 'official.pth'), path])
    converted = torch.load(path)['state_dict']
    backbone = MonaSwinTransformer(
        **TINY, init_cfg=ConfigDict(type='Pretrained', checkpoint=path))
    backbone.init_weights()
    state = backbone.state_dict()
    adapters = [k for k in converted if '_adapter.' in k]
    assert len(adapters) > 100  # every adapter tensor of every block
    for key in adapters:
        assert torch.equal(state[key[len('backbone.'):]], converted[key]), key


# ------------------------------------------------------- PEFTFreezeHook
class FreezeToy(BaseModel):
    """``backbone`` trains when DDP wraps the model, ``head`` does not; the
    policy (backbone frozen, head trained) flips both."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.head = nn.Linear(4, 1)
        self.head.requires_grad_(False)

    def forward(self, inputs, data_samples=None, mode='loss'):
        x = self.backbone(torch.stack(inputs))
        return dict(loss=(self.head(x) - 1).pow(2).mean())


def _rewrap_worker(rank, world_size, port, out_dir):
    init_gloo(rank, world_size, port)
    torch.manual_seed(0)
    model = FreezeToy()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    wrapper = dict(type='MMDistributedDataParallel', device_ids=None,
                   broadcast_buffers=False)
    runner = Runner(
        model=model,
        work_dir=osp.join(out_dir, 'work_dir'),
        train_dataloader=dict(
            dataset=[dict(inputs=torch.randn(4)) for _ in range(8)],
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='pseudo_collate'),
            batch_size=2),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=False, max_iters=3),
        default_hooks=dict(checkpoint=None),
        custom_hooks=[dict(type='PEFTFreezeHook')],
        launcher='pytorch',  # the group exists: the runner only wraps DDP
        cfg=dict(model_wrapper_cfg=wrapper),
        log_level='WARNING')
    runner.train()
    torch.save(dict(initial=initial, final=runner.model.module.state_dict(),
                    wrapper=type(runner.model).__name__),
               osp.join(out_dir, f'rank{rank}.pth'))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_freeze_policy_change_rewraps_ddp(tmp_path):
    """Bug: no DDP re-wrap after the policy changed requires_grad, so DDP
    syncs the parameters that trained when it was built: the head, which
    the policy trains, drifts apart on the two ranks (or DDP waits for the
    gradients of the now frozen backbone)."""
    torch.multiprocessing.spawn(_rewrap_worker,
                                args=(2, free_port(), str(tmp_path)),
                                nprocs=2)
    rank0, rank1 = (torch.load(tmp_path / f'rank{r}.pth') for r in (0, 1))
    assert rank0['wrapper'] == 'MMDistributedDataParallel'
    assert_same_tensors(rank0['final'], rank1['final'])
    assert not torch.equal(rank0['final']['head.weight'],
                           rank0['initial']['head.weight'])
    assert torch.equal(rank0['final']['backbone.weight'],
                       rank0['initial']['backbone.weight'])


# --------------------------------------------------------- NaNGuardHook
def guard_runner():
    param = nn.Parameter(torch.ones(1))
    return SimpleNamespace(
        iter=0, epoch=0, logger=MMLogger.get_current_instance(),
        message_hub=MessageHub.get_current_instance(),
        optim_wrapper=OptimWrapper(torch.optim.SGD([param], lr=0.1)))


def feed(hook, losses):
    runner = guard_runner()
    for i, loss in enumerate(losses):
        runner.iter = i
        hook.after_train_iter(runner, i, data_batch=None,
                              outputs=dict(loss=torch.tensor(loss)))


def test_patience_counts_only_non_finite_losses_in_a_row():
    """Bug: the patience counter never resets, so isolated non-finite losses
    (AMP overflow skips) add up and stop a healthy run."""
    nan = float('nan')
    hook = NaNGuardHook(patience=2)
    hook.before_train(guard_runner())
    feed(hook, [1.0, nan, 1.0, nan, 1.0, float('inf'), 1.0])  # no error
    with pytest.raises(NonFiniteLossError, match='iteration 3'):
        feed(NaNGuardHook(patience=2), [1.0, nan, nan])


def _nan_on_one_rank_worker(rank, world_size, port, out_dir):
    init_gloo(rank, world_size, port)
    hook = NaNGuardHook()
    hook.before_train(guard_runner())
    loss = float('nan') if rank == 1 else 1.0
    try:
        feed(hook, [loss])
        outcome = 'continued'
    except NonFiniteLossError as error:
        outcome = str(error)
    with open(osp.join(out_dir, f'rank{rank}.txt'), 'w') as f:
        f.write(outcome)
    torch.distributed.destroy_process_group()


def test_nan_on_another_rank_stops_this_one(monkeypatch):
    """Fast tier of the test below: the flag this rank computed goes through
    an all-reduce (max), faked here as the other rank reporting a NaN."""
    reduced = []

    def all_reduce(flag, op):
        assert op == 'max' and flag.tolist() == [0.0]
        reduced.append(flag.clone())
        flag.fill_(1.0)

    monkeypatch.setattr(nan_guard_hook, 'all_reduce', all_reduce)
    hook = NaNGuardHook()
    hook.before_train(guard_runner())
    with pytest.raises(NonFiniteLossError, match='on another rank'):
        feed(hook, [1.0])
    assert len(reduced) == 1


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank(tmp_path):
    """Bug: no all-reduce of the flag, so the healthy rank trains on and
    hangs in the next collective (two gloo processes)."""
    torch.multiprocessing.spawn(_nan_on_one_rank_worker,
                                args=(2, free_port(), str(tmp_path)),
                                nprocs=2)
    rank0, rank1 = ((tmp_path / f'rank{r}.txt').read_text() for r in (0, 1))
    assert 'on another rank (this one was finite)' in rank0
    assert 'not finite at iteration 1' in rank1 and 'on this rank' in rank1


# ------------------------------------------------------- ExactResumeHook
class NoisyData(Dataset):
    """Rows with noise drawn at fetch time from torch, NumPy and Python."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        import random
        noise = torch.randn(4) + float(np.random.randn()) + random.random()
        return dict(inputs=torch.full((4, ), float(index)) + noise)


class DropoutNet(BaseModel):
    """Dropout draws from the same torch generator as the data noise, so a
    reseed after the fetch changes the batch a resumed run sees. Records the
    dropout mask of every iteration."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 16)
        self.out = nn.Linear(16, 1)
        self.masks = []

    def forward(self, inputs, data_samples=None, mode='loss'):
        x = self.hidden(torch.stack(inputs)).relu()
        mask = (torch.rand_like(x) > 0.5).float()
        self.masks.append(mask)
        return dict(loss=self.out(x * mask * 2).pow(2).mean())


def dropout_run(work_dir, max_iters=6, resume_from=None, load_from=None,
                hooks=('ExactResumeHook', )):
    runner = Runner(
        model=DropoutNet(),
        work_dir=str(work_dir),
        experiment_name=f'{osp.basename(str(work_dir))}_{resume_from}',
        train_dataloader=dict(
            dataset=NoisyData(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='pseudo_collate'),
            batch_size=2, num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(
            type='CheckpointHook', by_epoch=False, interval=3)),
        custom_hooks=[dict(type=h) for h in hooks],
        randomness=dict(seed=0),
        resume=resume_from is not None,
        load_from=resume_from or load_from,
        log_level='WARNING')
    runner.train()
    return runner


def test_ranks_draw_different_dropout_masks(tmp_path, monkeypatch):
    """Bug: the step seed leaves out the rank, so every DDP rank draws the
    same dropout / drop-path masks (the same noise on every GPU)."""
    masks = {}
    for rank in (0, 1, 1):
        monkeypatch.setattr(exact_resume_hook, 'get_rank', lambda: rank)
        model = dropout_run(tmp_path / f'rank{rank}_{len(masks)}',
                            max_iters=3).model
        masks.setdefault(rank, []).append(model.masks)
    (rank0, ), (rank1, again) = masks[0], masks[1]
    assert all(torch.equal(a, b) for a, b in zip(rank1, again))  # seeded
    assert not any(torch.equal(a, b) for a, b in zip(rank0, rank1))


def test_reseed_comes_before_the_fetch(tmp_path):
    """Bug: reseeding after the batch is fetched; then a resumed run fetches
    other noise than the uninterrupted run and ends elsewhere."""
    reference = dropout_run(tmp_path / 'reference').model.state_dict()
    resumed = dropout_run(
        tmp_path / 'resumed',
        resume_from=str(tmp_path / 'reference' / 'iter_3.pth'))
    assert_same_tensors(resumed.model.state_dict(), reference)


def test_load_from_takes_bare_weights_resume_does_not(tmp_path):
    """Bug: the resumability check applied to load_from, which starts a new
    run from any weights."""
    first = dropout_run(tmp_path / 'first', max_iters=3)
    weights = str(tmp_path / 'weights.pth')
    torch.save(dict(state_dict=first.model.state_dict()), weights)
    dropout_run(tmp_path / 'finetune', max_iters=2, load_from=weights)
    with pytest.raises(NotResumableError, match='not a training checkpoint'):
        dropout_run(tmp_path / 'resume', max_iters=4, resume_from=weights)


# -------------------------------------------------------- AdapterLoadHook
def test_adapter_file_without_a_base_checkpoint_is_refused():
    """Bug: evaluating adapters on a random base when load_from is unset."""
    hook = AdapterLoadHook('work_dir/iter_8_adapters.pth')
    runner = SimpleNamespace()
    for stage in (hook.before_test, hook.before_val):
        with pytest.raises(RuntimeError, match='needs a base checkpoint.*'
                           'set load_from'):
            stage(runner)


# ------------------------------------------------------------ MiMi hook
def test_mimi_round_disagreeing_with_masks_is_refused(tmp_path):
    """Bug: a checkpoint whose meta says another round than its masks
    resumes and prunes on the wrong schedule."""
    one_round = dict(PRUNE, sigma_target=4)  # 80 -> 40 neurons at iter 2
    mimi_runner(tmp_path / 'run', max_iters=2, prune=one_round).train()
    checkpoint = load_file(str(tmp_path / 'run' / 'iter_2.pth'))
    assert checkpoint['meta']['mimi']['round'] == 1
    checkpoint['meta']['mimi']['round'] = 2
    torch.save(checkpoint, tmp_path / 'tampered.pth')
    with pytest.raises(RuntimeError, match='says 2 rounds were done but its '
                       'masks match round 1'):
        mimi_runner(tmp_path / 'resumed', max_iters=4, prune=one_round,
                    resume=True,
                    load_from=str(tmp_path / 'tampered.pth')).train()


def test_mimi_applies_rank0_masks_on_other_ranks(tmp_path, monkeypatch):
    """Bug: a rank other than 0 applies its own choice of neurons (no
    broadcast, or the local masks), so the ranks' models drift apart. Here
    this process is rank 1 and 'rank 0' keeps the first live neurons."""
    hooks, sent, own = [], [], []

    def broadcast(tensor, src=0):
        assert src == 0
        hook = hooks[0]
        live_after = hook._schedule[hook.round + 1]
        own.append(mimi_prune_hook.global_prune_masks(
            [a for _, a in hook._adapters], live_after))
        rank0 = torch.zeros_like(tensor)
        rank0[tensor.nonzero().flatten()[:live_after]] = 1
        tensor.copy_(rank0)
        sent.append(rank0.clone())

    monkeypatch.setattr(mimi_prune_hook, 'is_main_process', lambda: False)
    monkeypatch.setattr(mimi_prune_hook, 'broadcast', broadcast)
    runner = mimi_runner(tmp_path, max_iters=4)
    hooks.extend(h for h in runner.hooks if type(h).__name__ ==
                 PRUNE['type'])
    runner.train()
    assert len(sent) == 2  # two rounds, each from rank 0
    masks = torch.cat([a.neuron_mask for _, a in
                       backbone_of(runner).named_slots()])
    assert torch.equal(masks, sent[-1])
    # This rank's own scores would have picked other neurons.
    assert not torch.equal(own[0], sent[0])


# -------------------------------------------------- atomic file writing
@pytest.fixture
def io_log(monkeypatch):
    """Every os.fsync (as the path of its file) and os.replace, in order."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(('fsync', os.readlink(f'/proc/self/fd/{fd}')))
        real_fsync(fd)

    def replace(src, dst):
        events.append(('replace', str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, 'fsync', fsync)
    monkeypatch.setattr(os, 'replace', replace)
    return events


def assert_synced_then_renamed(events, path):
    """The last replace put a temporary file in ``path``; that file was
    fsynced before the rename."""
    renames = [e for e in events if e[0] == 'replace' and e[2] == str(path)]
    assert renames, f'{path} was not written by a rename: {events}'
    _, tmp, _ = renames[-1]
    assert osp.dirname(osp.abspath(tmp)) == osp.dirname(osp.abspath(path))
    synced = [i for i, e in enumerate(events)
              if e[0] == 'fsync' and osp.realpath(e[1]) == osp.realpath(tmp)]
    assert synced and synced[-1] < events.index(renames[-1]), events


def test_export_writes_are_synced_before_the_rename(tmp_path, io_log):
    """Bug: atomic_write / save_atomic replaced by a plain torch.save, or the
    fsync dropped."""
    path = tmp_path / 'iter_1_adapters.pth'
    save_atomic(dict(state_dict=dict(w=torch.ones(3))), str(path))
    assert_synced_then_renamed(io_log, path)
    assert torch.equal(torch.load(path)['state_dict']['w'], torch.ones(3))


def test_checkpoint_save_is_synced_before_the_rename(tmp_path, io_log):
    """Bug: os.fsync removed from mmpeft.compat's checkpoint save (a power
    cut after the rename leaves an empty iter_N.pth)."""
    path = tmp_path / 'iter_1.pth'
    save_checkpoint(dict(meta=dict(iter=1), state_dict={}), str(path))
    assert_synced_then_renamed(io_log, path)


def test_failed_export_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / 'iter_1_deploy.pth'
    save_atomic(dict(version=1), str(path))

    def half_write(tmp):
        with open(tmp, 'wb') as f:
            f.write(b'half a file')
        raise OSError('No space left on device')

    with pytest.raises(OSError, match='No space left'):
        atomic_write(half_write, str(path))
    assert torch.load(path) == dict(version=1)
    assert sorted(os.listdir(tmp_path)) == ['iter_1_deploy.pth',
                                            'iter_1_deploy.pth.sha256']

    def no_rename(src, dst):
        raise OSError('rename failed')

    monkeypatch.setattr(os, 'replace', no_rename)
    with pytest.raises(OSError, match='rename failed'):
        save_atomic(dict(version=2), str(path))
    assert load_file(str(path)) == dict(version=1)  # and its SHA-256
    assert sorted(os.listdir(tmp_path)) == ['iter_1_deploy.pth',
                                            'iter_1_deploy.pth.sha256']
