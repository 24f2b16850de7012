"""PEFTFreezeHook and AdapterMergeHook: the policy, the parameter table, the
files written beside every checkpoint, and resuming with both hooks on."""
import json
import os
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner
from torch import nn

from mmpeft.engine import (FreezePolicy, FreezePolicyError, PEFTFreezeHook,
                           apply_freeze_policy, count_params, format_table)
from mmpeft.engine.export import build_from_config
from peft_tiny import mona_seg_cfg

# The tiny Swin of the test configs: embed_dims 32, depths (1, 1, 2, 1).
BLOCK_WIDTHS = [32, 64, 128, 128, 256]


def mona_adapter_params(width, inner):
    """One Mona adapter's parameter count: norm and gammas 4C, project1 / 2
    2rC + r + C, depthwise 3/5/7 convs 83r + 3r, projector r^2 + r. At the
    paper's inner width r = 64 this is DESIGN.md's 133 * C + 9728."""
    return (5 + 2 * inner) * width + inner * inner + 88 * inner


def test_param_table_equals_independent_count(demo_data, tmp_path):
    cfg = mona_seg_cfg(demo_data, tmp_path)
    inner = cfg.model.backbone.adapter_cfg.inner_dim
    model = build_from_config(cfg)
    policy = FreezePolicy(train_norms=True, train_head=False)
    apply_freeze_policy(model, policy)
    table = count_params(model, policy=vars(policy))

    adapters = sum(2 * mona_adapter_params(c, inner) for c in BLOCK_WIDTHS)
    backbone = sum(p.numel() for p in model.backbone.parameters()) - adapters
    norms = sum(p.numel() for name, module in model.backbone.named_modules()
                if isinstance(module, nn.LayerNorm) and 'adapter' not in name
                for p in module.parameters(recurse=False))
    heads = sum(p.numel() for p in model.decode_head.parameters()) + sum(
        p.numel() for p in model.auxiliary_head.parameters())

    assert table.row('adapters').total == table.row(
        'adapters').trainable == adapters
    assert table.row('backbone (pretrained)').total == backbone
    assert table.row('backbone (pretrained)').trainable == norms > 0
    assert (table.row('head').total, table.row('head').trainable) == (heads, 0)
    assert table.model_params == sum(p.numel() for p in model.parameters())
    assert table.trainable == adapters + norms
    assert table.backbone_params == backbone
    assert table.pct_backbone(adapters) == pytest.approx(100 * adapters /
                                                         backbone)

    text = format_table(table)
    assert f'{adapters:,}' in text and f'{backbone:,}' in text
    assert f'{100 * adapters / backbone:.2f}%' in text
    as_json = json.loads(table.to_json())
    assert as_json['total']['trainable'] == adapters + norms
    assert as_json['policy'] == vars(policy)


def fake_runner(model, params, tmp_path):
    return SimpleNamespace(model=model,
                           optim_wrapper=OptimWrapper(
                               torch.optim.SGD(params, lr=0.1)),
                           logger=MMLogger.get_current_instance(),
                           work_dir=str(tmp_path),
                           cfg=Config())


def test_freeze_hook_fails_loudly(demo_data, tmp_path):
    model = build_from_config(mona_seg_cfg(demo_data, tmp_path))
    hook = PEFTFreezeHook()

    runner = fake_runner(model, model.parameters(), tmp_path)
    hook.before_run(runner)
    hook.before_train(runner)  # the policy holds: no error
    patch_weight = model.backbone.patch_embed.projection.weight
    patch_weight.requires_grad = True
    with pytest.raises(FreezePolicyError, match='so they would train'):
        hook.before_train(runner)

    hook.before_run(runner)
    adapters_only = [p for n, p in model.named_parameters() if 'adapter' in n]
    with pytest.raises(FreezePolicyError, match='would never update'):
        hook.before_train(fake_runner(model, adapters_only, tmp_path))


def test_freeze_hook_nothing_trainable(demo_data, tmp_path):
    cfg = mona_seg_cfg(demo_data, tmp_path, backbone='mmdet.SwinTransformer')
    model = build_from_config(cfg)  # no adapters
    hook = PEFTFreezeHook(train_head=False)
    runner = fake_runner(model, model.parameters(), tmp_path)
    hook.before_run(runner)
    with pytest.raises(FreezePolicyError, match='Nothing is trainable'):
        hook.before_train(runner)


def test_freeze_hook_catches_frozen_stages(demo_data, tmp_path):
    cfg = mona_seg_cfg(demo_data, tmp_path)
    cfg.model.backbone.frozen_stages = 1  # Swin freezes stage 0 on train()
    model = build_from_config(cfg)
    runner = fake_runner(model, model.parameters(), tmp_path)
    hook = PEFTFreezeHook()
    hook.before_run(runner)
    with pytest.raises(FreezePolicyError, match='frozen_stages'):
        hook.before_train(runner)


class Snapshot(Hook):
    """The backbone's weights when training starts (after init_weights)."""

    def before_train(self, runner):
        self.params = {
            n: p.detach().clone()
            for n, p in runner.model.backbone.named_parameters()
        }


def test_hooks_in_a_run_then_resume(demo_data, tmp_path):
    cfg = mona_seg_cfg(demo_data, tmp_path, max_iters=2)
    cfg.optim_wrapper.optimizer.lr = 1e-2
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint.update(interval=1,
                                        max_keep_ckpts=1,
                                        save_best='mIoU',
                                        rule='greater')
    runner = Runner.from_cfg(cfg)
    snapshot = Snapshot()
    runner.register_hook(snapshot)
    runner.train()

    model = runner.model
    params = dict(model.backbone.named_parameters())
    frozen = [n for n in params if 'adapter' not in n]
    adapters = [n for n in params if 'adapter' in n]
    assert all(torch.equal(params[n], snapshot.params[n]) for n in frozen)
    assert any(not torch.equal(params[n], snapshot.params[n])
               for n in adapters)

    # The table of the run, as JSON, equals the count of the trained model.
    written = json.load(open(tmp_path / 'peft_params.json'))
    assert written == json.loads(
        count_params(model, written['policy']).to_json())
    assert written['total']['trainable'] == sum(p.numel()
                                                for p in model.parameters()
                                                if p.requires_grad)

    files = set(os.listdir(tmp_path))
    assert {
        'iter_2.pth', 'iter_2_deploy.pth', 'iter_2_deploy.py',
        'iter_2_adapters.pth', 'best_mIoU_iter_2.pth',
        'best_mIoU_iter_2_deploy.pth', 'best_mIoU_iter_2_deploy.py',
        'best_mIoU_iter_2_adapters.pth'
    } <= files
    # max_keep_ckpts=1 removed iter_1.pth: its companions went with it.
    assert not any(f.startswith('iter_1') for f in files)
    assert not any('.tmp' in f for f in files)

    # The training checkpoint stays unmerged; the deploy one is fused.
    train_keys = torch.load(tmp_path / 'iter_2.pth',
                            weights_only=False)['state_dict'].keys()
    deploy_keys = torch.load(tmp_path /
                             'iter_2_deploy.pth')['state_dict'].keys()
    assert any(k.endswith('adapter_conv.conv1.weight') for k in train_keys)
    assert not any(
        k.endswith('adapter_conv.conv1.weight') for k in deploy_keys)
    assert any(k.endswith('adapter_conv.dw.weight') for k in deploy_keys)

    # Resume with both hooks on: training goes on from iteration 2.
    cfg = mona_seg_cfg(demo_data, tmp_path, max_iters=3)
    cfg.optim_wrapper.optimizer.lr = 1e-2
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint.update(interval=1, max_keep_ckpts=1)
    cfg.resume = True
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    assert resumed.iter == 3
    files = set(os.listdir(tmp_path))
    assert {
        'iter_3.pth', 'iter_3_deploy.pth', 'iter_3_deploy.py',
        'iter_3_adapters.pth'
    } <= files
    # iter_2.pth was rotated out after the resume: its companions too.
    assert not any(f.startswith('iter_2') for f in files)
    ckpt = torch.load(tmp_path / 'iter_3.pth', weights_only=False)
    assert ckpt['meta']['iter'] == 3 and 'optimizer' in ckpt
