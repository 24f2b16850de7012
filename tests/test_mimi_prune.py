"""MiMiPruneHook in real mmengine runs: two rounds reach the target, the
optimizer cannot resurrect pruned neurons, ``--resume`` after round one ends
like an uninterrupted run, DDP ranks end with rank 0's masks, and the four
MiMi configs train and prune on the generated data."""
import json
import os
import os.path as osp
import socket

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel, is_model_wrapper
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

from helpers import REPO_ROOT, load_tool, tiny_runner_cfg
from mmpeft.adapters import MiMiAdapter
from mmpeft.engine import MiMiPruneHook
from mmpeft.engine.export import build_from_config
from mmpeft.engine.mimi_prune_hook import (global_prune_masks,
                                           official_prune_masks)
from mmpeft.models import MiMiSwin

# Widths 16 and 32: sum(C) = 160, 80 neurons at sigma0 = 2, so the plan to
# sigma_target = 8 is 80 -> 40 -> 20: two rounds, at iterations 2 and 4.
TINY_SWIN = dict(
    embed_dims=16,
    depths=(1, 2),
    num_heads=(1, 2),
    strides=(4, 2),
    out_indices=(0, 1),
    window_size=4,
    drop_path_rate=0.0,
    sigma0=2)
PRUNE = dict(type='MiMiPruneHook', sigma_target=8, rho=0.5, interval=2,
             by_epoch=False)


class ToyRegressor(BaseModel):
    """A tiny MiMiSwin and a linear head regressing one number per image."""

    def __init__(self):
        super().__init__()
        self.backbone = MiMiSwin(**TINY_SWIN)
        self.head = nn.Linear(32, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        pred = self.head(self.backbone(inputs)[-1].mean((2, 3))).squeeze(1)
        if mode == 'loss':
            return dict(loss=F.mse_loss(pred, targets))
        return pred


class ToyImages(Dataset):
    """Deterministic random images whose target is their mean colour."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        image = torch.randn(3, 32, 32,
                            generator=torch.Generator().manual_seed(index))
        return dict(inputs=image, targets=image.mean() * 10)


def toy_runner(work_dir, max_iters=6, prune=PRUNE, **kwargs):
    return Runner(
        model=ToyRegressor(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=ToyImages(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate'),
            batch_size=2,
            num_workers=0),
        optim_wrapper=dict(
            optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2,
                            by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[prune],
        randomness=dict(seed=0),
        log_level='WARNING',
        **kwargs)


def backbone_of(runner) -> MiMiSwin:
    model = runner.model.module if is_model_wrapper(
        runner.model) else runner.model
    return model.backbone


def masks_of(runner):
    return [a.neuron_mask.clone() for _, a in backbone_of(runner).named_slots()]


def assert_pruned_entries_are_zero(runner):
    """Weights of masked neurons and their AdamW moments are all zero."""
    state = runner.optim_wrapper.optimizer.state
    for _, adapter in backbone_of(runner).named_slots():
        dead = (adapter.neuron_mask == 0).nonzero().flatten()
        for param, axis in adapter.neuron_axes():
            tensors = [param] + [state[param][k]
                                 for k in ('exp_avg', 'exp_avg_sq')]
            for tensor in tensors:
                assert not tensor.index_select(axis, dead).any()


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('mimi_uninterrupted')
    runner = toy_runner(work_dir)
    runner.train()
    return runner


def test_two_rounds_reach_the_target(uninterrupted):
    runner = uninterrupted
    widths = backbone_of(runner).adapter_widths()
    assert sum(widths) == 20 and 160 / sum(widths) >= 8
    # global ranking: the adapters do not all keep a quarter of 8 or 16
    assert widths != [2, 2, 4, 4, 4, 4]
    assert_pruned_entries_are_zero(runner)

    with open(osp.join(runner.work_dir, 'mimi_prune.jsonl')) as f:
        records = [json.loads(line) for line in f]
    assert [(r['round'], r['iter'], sum(r['widths'])) for r in records] == [
        (0, 0, 80), (1, 2, 40), (2, 4, 20)]
    assert records[-1]['widths'] == widths
    assert records[-1]['compression'] == 8
    # trainable = head (33) + live adapter weights (2 C per neuron)
    in_dims = records[-1]['in_dims']
    assert records[-1]['adapter_params'] == sum(
        2 * c * w for c, w in zip(in_dims, widths))
    assert records[-1]['trainable_params'] == 33 + records[-1][
        'adapter_params']
    assert records[0]['trainable_params'] == 33 + sum(
        2 * c * w for c, w in zip(in_dims, records[0]['widths']))


def test_checkpoint_records_masks_and_widths(uninterrupted):
    ckpt = torch.load(
        osp.join(uninterrupted.work_dir, 'iter_2.pth'), weights_only=False)
    mimi = ckpt['meta']['mimi']
    assert mimi['round'] == 1 and sum(mimi['widths']) == 40
    assert mimi['names'][0] == 'backbone.stages.0.blocks.0.attn_adapter'
    masks = [ckpt['state_dict'][f'{name}.neuron_mask']
             for name in mimi['names']]
    assert [int(m.sum()) for m in masks] == mimi['widths']


def test_resume_after_round_one_ends_like_the_uninterrupted_run(
        uninterrupted, tmp_path):
    runner = toy_runner(
        tmp_path,
        resume=True,
        load_from=osp.join(uninterrupted.work_dir, 'iter_2.pth'))
    runner.train()
    hook = next(h for h in runner.hooks if isinstance(h, MiMiPruneHook))
    assert hook.round == 2
    for mask, expected in zip(masks_of(runner), masks_of(uninterrupted)):
        assert torch.equal(mask, expected)
    assert_pruned_entries_are_zero(runner)
    with open(osp.join(runner.work_dir, 'mimi_prune.jsonl')) as f:
        assert [json.loads(line)['round'] for line in f] == [2]


def test_masks_changed_outside_the_plan_are_refused(uninterrupted, tmp_path):
    runner = toy_runner(
        tmp_path,
        resume=True,
        load_from=osp.join(uninterrupted.work_dir, 'iter_2.pth'),
        prune=dict(PRUNE, rho=0.25))
    with pytest.raises(RuntimeError, match='no step of the plan'):
        runner.train()


def test_a_schedule_too_short_for_the_rounds_is_refused(tmp_path):
    with pytest.raises(ValueError, match='fits only 1 more'):
        toy_runner(tmp_path, max_iters=3).train()


def test_epoch_interval_in_an_iteration_loop_is_refused(tmp_path):
    with pytest.raises(ValueError, match='by_epoch=False'):
        toy_runner(tmp_path, prune=dict(PRUNE, by_epoch=True)).train()


def test_plot_tool_draws_the_allocation(uninterrupted, tmp_path):
    plot_mimi = load_tool('plot_mimi')
    rounds = plot_mimi.load_rounds(
        osp.join(uninterrupted.work_dir, 'mimi_prune.jsonl'))
    out = str(tmp_path / 'allocation.png')
    plot_mimi.plot(rounds, out)
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


# ------------------------------------------- the official 'rounds' schedule
# Three rounds of four iterations: a linear warm-up (iterations 0-1), then a
# cosine (2-3), restarted at iterations 4 and 8; a prune ends each round (80
# neurons -> at least 40, 20, 10).
ROUNDS = dict(type='MiMiPruneHook', schedule='rounds', rho=0.5, rounds=3,
              round_iters=4)
ROUND_SCHEDULE = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=2,
         end=4)
]


class RecordLR(Hook):
    """The learning rate each iteration's optimizer step used."""
    priority = 'HIGHEST'  # after_train_iter before ParamSchedulerHook steps

    def __init__(self):
        self.lrs = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.lrs[runner.iter] = runner.optim_wrapper.get_lr()['lr'][0]


def rounds_runner(work_dir, **kwargs):
    runner = toy_runner(work_dir, max_iters=12, prune=ROUNDS,
                        param_scheduler=ROUND_SCHEDULE, **kwargs)
    recorder = RecordLR()
    runner.register_hook(recorder)
    return runner, recorder


@pytest.fixture(scope='module')
def rounds_run(tmp_path_factory):
    runner, recorder = rounds_runner(tmp_path_factory.mktemp('mimi_rounds'))
    runner.train()
    return runner, recorder.lrs


def test_rounds_restart_the_lr_schedule_every_round(rounds_run):
    runner, lrs = rounds_run
    curve = [lrs[i] for i in range(4)]
    # warm-up from 0.1 x lr to lr, then half a cosine down towards eta_min
    assert curve[:3] == pytest.approx([1e-4, 1e-3, 1e-3])
    assert curve[3] == pytest.approx((1e-3 + 1e-5) / 2)
    for start in (4, 8):
        assert [lrs[start + i] for i in range(4)] == pytest.approx(curve)


def test_rounds_prune_at_each_round_end(rounds_run):
    runner, _ = rounds_run
    with open(osp.join(runner.work_dir, 'mimi_prune.jsonl')) as f:
        records = [json.loads(line) for line in f]
    assert [(r['round'], r['iter']) for r in records] == [(0, 0), (1, 4),
                                                          (2, 8), (3, 12)]
    live = [sum(r['widths']) for r in records]
    assert live[0] == 80 and all(
        n >= p for n, p in zip(live[1:], (40, 20, 10)))
    assert live == sorted(live, reverse=True) and live[-1] < 20
    assert all(r['schedule'] == 'rounds' for r in records)
    assert_pruned_entries_are_zero(runner)


@pytest.mark.parametrize('checkpoint', ['iter_6.pth', 'iter_4.pth'])
def test_rounds_resume_continues_the_same_curve(rounds_run, checkpoint,
                                                tmp_path):
    """Mid-round (6) and at a round boundary (4): the resumed run's learning
    rates and final masks are the uninterrupted run's."""
    uninterrupted, lrs = rounds_run
    runner, recorder = rounds_runner(
        tmp_path, resume=True,
        load_from=osp.join(uninterrupted.work_dir, checkpoint))
    runner.train()
    start = int(checkpoint[5:-4])
    assert sorted(recorder.lrs) == list(range(start, 12))
    assert [recorder.lrs[i] for i in range(start, 12)] == pytest.approx(
        [lrs[i] for i in range(start, 12)])
    for mask, expected in zip(masks_of(runner), masks_of(uninterrupted)):
        assert torch.equal(mask, expected)


def test_plot_tool_draws_a_rounds_run(rounds_run, tmp_path):
    runner, _ = rounds_run
    plot_mimi = load_tool('plot_mimi')
    rounds = plot_mimi.load_rounds(
        osp.join(runner.work_dir, 'mimi_prune.jsonl'))
    assert [r['round'] for r in rounds] == [0, 1, 2, 3]
    out = str(tmp_path / 'allocation.png')
    plot_mimi.plot(rounds, out)
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_rounds_resume_with_another_rho_is_refused(rounds_run, tmp_path):
    uninterrupted, _ = rounds_run
    runner = toy_runner(
        tmp_path, max_iters=12, prune=dict(ROUNDS, rho=0.25),
        param_scheduler=ROUND_SCHEDULE, resume=True,
        load_from=osp.join(uninterrupted.work_dir, 'iter_6.pth'))
    with pytest.raises(RuntimeError, match='60 or more'):
        runner.train()


@pytest.mark.parametrize('change, match', [
    (dict(max_iters=10), 'training loop of 12 iters'),
    (dict(prune=dict(ROUNDS, round_iters=None, round_epochs=1)),
     'by_epoch=False'),
    (dict(param_scheduler=[dict(type='MultiStepLR', by_epoch=True,
                                milestones=[1])]), 'steps per epoch'),
    (dict(param_scheduler=[dict(type='ConstantLR', by_epoch=False,
                                begin=5, end=8)]), 'after the end of a round'),
    (dict(prune=dict(ROUNDS, rho=0.9, rounds=3)), 'leaves no neuron'),
])
def test_rounds_that_cannot_replay_are_refused(change, match, tmp_path):
    kwargs = dict(max_iters=12, prune=ROUNDS, param_scheduler=ROUND_SCHEDULE)
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        toy_runner(tmp_path, **kwargs).train()


# --------------------------------------------------------------------- DDP
class DesynchroniseRank1(Hook):
    """Just before the first round, rank 1 scales its adapter weights by
    random per-neuron factors, so its own ranking differs from rank 0's; every
    rank records the round-1 masks it would choose by itself."""
    priority = 'ABOVE_NORMAL'  # before MiMiPruneHook in after_train_iter

    def __init__(self, first_round_iter, select):
        self.first_round_iter = first_round_iter
        self.select = select
        self.local_choice = None

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 != self.first_round_iter:
            return
        adapters = [a for _, a in backbone_of(runner).named_slots()]
        if runner.rank == 1:
            generator = torch.Generator().manual_seed(1)
            with torch.no_grad():
                for adapter in adapters:
                    factors = torch.rand(adapter.hidden_dim,
                                         generator=generator)
                    adapter.down.weight.mul_(factors[:, None] * 4)
        self.local_choice = self.select(adapters, 40)


# Per schedule: the hook's runner arguments, the iteration of the first
# round, the selection rule of that round and the neurons left at the end.
DDP_CASES = {
    'within': (dict(), PRUNE['interval'], global_prune_masks, 20),
    'rounds': (dict(max_iters=12, prune=ROUNDS,
                    param_scheduler=ROUND_SCHEDULE), ROUNDS['round_iters'],
               official_prune_masks, 10),
}


def _ddp_worker(rank, world_size, port, out_dir, schedule):
    os.environ.update(
        MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
        LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.distributed.init_process_group('gloo', rank=rank,
                                         world_size=world_size)
    runner_kwargs, first_round_iter, select, _ = DDP_CASES[schedule]
    desync = DesynchroniseRank1(first_round_iter, select)
    recorder = RecordLR()
    runner = toy_runner(
        osp.join(out_dir, 'work_dir'),
        **runner_kwargs,
        launcher='pytorch',  # the group exists: the runner only wraps DDP
        # The runner's default wrapper, less device_ids (CPU DDP takes none).
        cfg=dict(model_wrapper_cfg=dict(
            type='MMDistributedDataParallel', device_ids=None,
            broadcast_buffers=False)))
    runner.register_hook(desync)
    runner.register_hook(recorder)
    runner.train()
    assert is_model_wrapper(runner.model)
    assert_pruned_entries_are_zero(runner)
    torch.save(
        dict(masks=masks_of(runner), local_choice=desync.local_choice,
             lrs=recorder.lrs),
        osp.join(out_dir, f'rank{rank}.pth'))
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize('schedule', DDP_CASES)
def test_ddp_ranks_end_with_rank0_masks(schedule, tmp_path):
    torch.multiprocessing.spawn(
        _ddp_worker, args=(2, _free_port(), str(tmp_path), schedule),
        nprocs=2)
    rank0, rank1 = (torch.load(tmp_path / f'rank{r}.pth') for r in (0, 1))
    for mask0, mask1 in zip(rank0['masks'], rank1['masks']):
        assert torch.equal(mask0, mask1)
    assert rank0['lrs'] == rank1['lrs']  # (rounds: restarted on every rank)
    final = torch.cat(rank0['masks']).bool()
    assert final.sum() == DDP_CASES[schedule][-1]
    # Round 1 applied rank 0's choice on both ranks (the final masks are a
    # subset of it), although rank 1 alone would have chosen other neurons.
    assert rank0['local_choice'].sum() == rank1['local_choice'].sum() == 40
    assert not torch.equal(rank0['local_choice'], rank1['local_choice'])
    assert not (final & ~rank0['local_choice'].bool()).any()


# ------------------------------------------------- the four MiMi configs
MIMI_CONFIGS = [
    'maskrcnn_swinb_coco.py', 'fasterrcnn_swinb_voc.py',
    'upernet_swinb_ade20k.py', 'orientedrcnn_swinb_dota.py'
]


def tiny_mimi_cfg(config, demo_data, work_dir):
    """The config on the generated data, with a 2-stage 16/32-wide Swin and
    the hook pruning every iteration (in_channels of the next module fixed)."""
    cfg = tiny_runner_cfg(
        osp.join(REPO_ROOT, 'configs/mimi', config), demo_data, work_dir,
        max_iters=3, img_scale=(64, 64))
    cfg.model.backbone.update(
        {k: v for k, v in TINY_SWIN.items() if k != 'sigma0'})
    widths = [16, 32]
    if 'neck' in cfg.model:
        cfg.model.neck.update(in_channels=widths, num_outs=3)
        anchors = cfg.model.rpn_head.anchor_generator
        anchors.strides = anchors.strides[:3]
        for extractor in ('bbox_roi_extractor', 'mask_roi_extractor'):
            if extractor in cfg.model.roi_head:
                cfg.model.roi_head[extractor].featmap_strides = [4, 8]
    else:
        cfg.model.decode_head.update(in_channels=widths, in_index=[0, 1])
        cfg.model.auxiliary_head.update(in_channels=32, in_index=1)
    (prune, ) = [h for h in cfg.custom_hooks if h.type == 'MiMiPruneHook']
    if prune.get('schedule') == 'rounds':
        prune.update(round_epochs=1)  # the caller runs one epoch per round
    else:
        prune.update(interval=1, by_epoch=False)
    cfg.train_dataloader.batch_size = 2  # UperNet's BN on a 1x1 pooled map
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None  # time
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize('config', MIMI_CONFIGS)
def test_mimi_configs_train_prune_and_deploy(config, demo_data, tmp_path):
    # The config's own AdapterMergeHook writes the deploy files.
    cfg = tiny_mimi_cfg(config, demo_data, tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    backbone = backbone_of(runner)
    assert isinstance(backbone, MiMiSwin)
    # sigma0 = 4 on widths 16/32: 40 neurons, sum(C) = 160; sigma_target =
    # 32 leaves 5, in three rounds (40 -> 20 -> 10 -> 5), one per iteration
    widths = backbone.adapter_widths()
    assert sum(widths) == 5
    assert_pruned_entries_are_zero(runner)

    # The merge-on-save hook's deploy config rebuilds the shrunk shapes from
    # deploy_backbone_cfg(), and its checkpoint computes what training did.
    deploy_cfg = Config.fromfile(str(tmp_path / 'iter_3_deploy.py'))
    assert deploy_cfg.model.backbone.adapter_widths == widths
    deployed = build_from_config(deploy_cfg)
    deployed.load_state_dict(
        torch.load(tmp_path / 'iter_3_deploy.pth',
                   weights_only=False)['state_dict'],
        strict=True)
    assert [a.hidden_dim for _, a in deployed.backbone.named_slots()
            ] == widths
    for model in (deployed.backbone, backbone):
        model.eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for out, ref in zip(deployed.backbone(image), backbone(image)):
            assert torch.allclose(out, ref, atol=1e-5)
    assert all(
        isinstance(a, MiMiAdapter) for _, a in backbone.named_slots())


@pytest.mark.slow
def test_rounds_config_restarts_its_schedule_and_prunes(demo_data, tmp_path):
    """configs/mimi/fasterrcnn_swinb_voc_rounds.py, each round one epoch of
    the generated data with the config's own param schedulers: every epoch
    starts at the warm-up's first learning rate, and every round prunes."""
    cfg = tiny_mimi_cfg('fasterrcnn_swinb_voc_rounds.py', demo_data, tmp_path)
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=3,
                         val_interval=3)
    cfg.default_hooks.checkpoint.update(by_epoch=True, interval=3)
    cfg.log_processor = dict(by_epoch=True)
    cfg.train_dataloader.batch_size = 1  # several iterations per epoch
    runner = Runner.from_cfg(cfg)
    recorder = RecordLR()
    runner.register_hook(recorder)
    runner.train()
    per_epoch = len(runner.train_dataloader)
    assert per_epoch > 1
    starts = [recorder.lrs[e * per_epoch] for e in range(3)]
    assert starts == pytest.approx([cfg.optim_wrapper.optimizer.lr * 1e-3] *
                                   3)
    assert recorder.lrs[per_epoch - 1] > starts[0]  # the warm-up went on
    with open(osp.join(runner.work_dir, 'mimi_prune.jsonl')) as f:
        live = [sum(json.loads(line)['widths']) for line in f]
    # sigma0 = 4 on widths 16/32: 40 neurons, then at least 20, 10, 5
    assert live[0] == 40 and all(
        n >= p for n, p in zip(live[1:], (20, 10, 5))) and len(live) == 4


def test_weighted_ranking_puts_each_adapter_on_its_own_scale():
    """weighted=True (official --weighted 1): scores divided by the adapter's
    best, so a uniformly weak adapter is no longer pruned first."""
    strong, weak = MiMiAdapter(4, 4), MiMiAdapter(4, 4)
    with torch.no_grad():
        for adapter, scale in ((strong, 1.0), (weak, 0.01)):
            levels = torch.arange(1.0, 5.0) * scale
            adapter.down.weight.copy_(levels[:, None].expand(4, 4))
            adapter.up.weight.copy_(levels[None, :].expand(4, 4))
    plain = global_prune_masks([strong, weak], live_after=4)
    assert plain.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    weighted = global_prune_masks([strong, weak], live_after=4, weighted=True)
    assert weighted.tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
