"""The comparison methods' configs (configs/{adapter,adaptformer,lora,lorand},
each task on both hosts): each builds its model with the method table's
adapters, only adapters train in the backbone, and a training step moves the
adapters and not one frozen weight."""
import glob
import importlib
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from helpers import REPO_ROOT, tiny_runner_cfg
from mmpeft.methods import METHODS
from test_hooks import Snapshot
from test_reliability_support import (HEAD_WIDTH, IMG_SCALE, SWIN_CHANNELS,
                                      TINY_SWIN, TINY_VIT)

COMPARISON = ('adapter', 'adaptformer', 'lora', 'lorand')
TASKS = ('maskrcnn_{}_coco', 'upernet_{}_ade20k', 'fasterrcnn_{}_voc',
         'orientedrcnn_{}_dota')
HOST_BACKBONES = {'swin': 'swinb', 'vit': 'vitb'}
CONFIGS = [
    (f'configs/{name}/{task.format(b)}.py', f'{name}_{host}')
    for name in COMPARISON for host, b in HOST_BACKBONES.items()
    for task in TASKS
]
# The dinov2 host (mmpretrain's ViT) ships UperNet and Mask R-CNN configs.
DINOV2_TASKS = TASKS[:2]
DINOV2_CONFIGS = [(f'configs/{name}/{task.format("dinov2b")}.py',
                   f'{name}_dinov2')
                  for name in COMPARISON for task in DINOV2_TASKS]


def test_every_comparison_method_has_its_eight_configs():
    found = {osp.relpath(p, REPO_ROOT) for name in COMPARISON
             for p in glob.glob(osp.join(REPO_ROOT, 'configs', name, '*.py'))}
    assert found == {config for config, _ in CONFIGS + DINOV2_CONFIGS}
    for _, method in CONFIGS + DINOV2_CONFIGS:
        assert osp.isfile(osp.join(REPO_ROOT, METHODS[method].config_base))


@pytest.mark.parametrize('config,method', CONFIGS + DINOV2_CONFIGS)
def test_config_builds_the_method_table_backbone(config, method):
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    backbone = cfg.model.backbone
    expected = METHODS[method].backbone
    assert backbone.type == expected['type']
    assert backbone.adapters.to_dict() == expected['adapters']
    assert backbone.init_cfg.type == 'Pretrained' and backbone.convert_weights
    assert {'PEFTFreezeHook', 'AdapterMergeHook'} <= {
        hook['type'] for hook in cfg.custom_hooks}
    assert 'mmpeft' in cfg.custom_imports.imports

    init_default_scope(cfg.default_scope)
    registry = importlib.import_module(f'{cfg.default_scope}.registry')
    model = registry.MODELS.build(cfg.model)  # no init_weights: no download
    assert type(model.backbone).__name__ == expected['type']
    trainable = {n for n, p in model.backbone.named_parameters()
                 if p.requires_grad}
    assert trainable and trainable == set(model.backbone.adapter_param_names())


def tiny_voc_cfg(config, data_root, work_dir):
    """The Faster R-CNN VOC ``config`` as one training step of a tiny Swin
    or ViT (the widths of tests/test_reliability_support.py); adapters,
    placements, hooks and optimizer as shipped."""
    cfg = tiny_runner_cfg(osp.join(REPO_ROOT, config), data_root, work_dir,
                          max_iters=1, img_scale=IMG_SCALE)
    model = cfg.model
    if 'vitb' in config:
        model.backbone.update(TINY_VIT)
        model.neck[0].in_channels = TINY_VIT['embed_dims']
        model.neck[1].update(in_channels=[TINY_VIT['embed_dims']] * 4,
                             out_channels=HEAD_WIDTH)
    else:
        model.backbone.update(TINY_SWIN)
        model.neck.update(in_channels=SWIN_CHANNELS, out_channels=HEAD_WIDTH)
    model.rpn_head.update(in_channels=HEAD_WIDTH, feat_channels=HEAD_WIDTH)
    model.roi_head.bbox_roi_extractor.out_channels = HEAD_WIDTH
    model.roi_head.bbox_head.update(in_channels=HEAD_WIDTH,
                                    fc_out_channels=128)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.default_hooks.checkpoint.interval = 10  # one step, no checkpoint
    return cfg


def train_one_step(cfg):
    """Train ``cfg``; the backbone's weights before and after."""
    runner = Runner.from_cfg(cfg)
    snapshot = Snapshot()
    runner.register_hook(snapshot)
    runner.train()
    return snapshot.params, dict(runner.model.backbone.named_parameters()), \
        set(runner.model.backbone.adapter_param_names())


def assert_only_adapters_moved(before, after, adapters):
    frozen = [n for n in after if n not in adapters]
    assert frozen and adapters
    moved = [n for n in frozen if not torch.equal(after[n], before[n])]
    assert not moved, f'frozen weights changed: {moved[:8]}'
    assert all(after[n].requires_grad for n in adapters)
    assert not any(after[n].requires_grad for n in frozen)
    assert any(not torch.equal(after[n], before[n]) for n in adapters)


@pytest.mark.parametrize(
    'config', [c for c, _ in CONFIGS if 'fasterrcnn' in c])
def test_one_step_of_the_tiny_voc_config_moves_only_adapters(
        config, demo_data, tmp_path):
    assert_only_adapters_moved(
        *train_one_step(tiny_voc_cfg(config, demo_data, tmp_path)))


# One task per method and host, rotating so that each host runs each task
# once: a full-size Swin-B / ViT-B step costs ~30 s on 2 CPU cores, so all
# 32 would take a quarter of CI's time. Every config still builds above, and
# every method trains one tiny VOC step in the fast tier.
FULL_SIZE_STEPS = [CONFIGS[i * len(TASKS) + (i + i // 2) % len(TASKS)][0]
                   for i in range(len(CONFIGS) // len(TASKS))]


@pytest.mark.slow
@pytest.mark.parametrize('config', FULL_SIZE_STEPS)
def test_one_full_size_step_moves_only_adapters(config, demo_data, tmp_path):
    cfg = tiny_runner_cfg(osp.join(REPO_ROOT, config), demo_data, tmp_path,
                          max_iters=1)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.default_hooks.checkpoint.interval = 10  # one step, no checkpoint
    assert_only_adapters_moved(*train_one_step(cfg))


def swin_b_count(method):
    """Trainable backbone parameters of ``method`` on Swin-B, in closed form
    from each adapter's shapes (widths C = 128, 256, 512, 1024; depths 2,
    2, 18, 2; width / rank m = 64; LoRand 2 branches of 8x8 kernels)."""
    widths = [c for c, depth in zip((128, 256, 512, 1024), (2, 2, 18, 2))
              for _ in range(depth)]
    m, alpha, beta = 64, 2, 8
    per_block = dict(
        adapter=lambda c: 2 * (2 * c * m + m + c),
        adaptformer=lambda c: 2 * c * m + m + c,
        lora=lambda c: m * (c + 3 * c),  # A: (r, C), B: (3C, r) on qkv
        lorand=lambda c: 2 * (alpha * (2 * beta * (c + m) + beta ** 2) + m
                              + c))[method]
    return sum(per_block(c) for c in widths)


def readme_comparison_rows():
    """method -> (trainable params, our %) of the README's Swin-B table."""
    with open(osp.join(REPO_ROOT, 'README.md')) as f:
        text = f.read().split('### Comparison methods', 1)[1]
    rows = {}
    for line in text.split('\n\n### ', 1)[0].splitlines():
        cells = [c.strip() for c in line.strip('|').split('|')]
        if len(cells) == 5 and cells[1].replace(',', '').isdigit():
            rows[cells[0]] = (int(cells[1].replace(',', '')), cells[2])
    return rows


README_NAMES = dict(adapter='Adapter', adaptformer='AdaptFormer', lora='LoRA',
                    lorand='LoRand')


@pytest.mark.parametrize('method', COMPARISON)
def test_readme_swin_b_counts_are_the_configs(method):
    """The README's numbers are those of the Swin-B config's backbone (what
    tools/count_params.py prints in its adapters row), and of the adapters'
    shapes."""
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, f'configs/{method}/maskrcnn_swinb_coco.py'))
    init_default_scope(cfg.default_scope)
    backbone = importlib.import_module('mmdet.registry').MODELS.build(
        cfg.model.backbone)
    adapters = set(backbone.adapter_param_names())
    params = dict(backbone.named_parameters())
    trainable = sum(params[n].numel() for n in adapters)
    pretrained = sum(p.numel() for n, p in params.items() if n not in adapters)
    assert pretrained == 86_745_016
    assert trainable == swin_b_count(method)
    count, percent = readme_comparison_rows()[README_NAMES[method]]
    assert count == trainable
    assert percent == f'{100 * trainable / pretrained:.2f}%'
