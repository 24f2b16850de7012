"""The comparison methods' configs (configs/{adapter,adaptformer,lora,lorand},
each task on both hosts; their own papers' forms configs/<name>_orig, VOC on
both hosts): each builds its model with the method table's adapters, only
adapters train in the backbone, a training step moves the adapters and not
one frozen weight, and the Swin-B counts are those of the official code."""
import glob
import importlib
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from torch import nn

from helpers import REPO_ROOT, tiny_runner_cfg
from mmpeft.engine.peft_freeze_hook import policy_flags, policy_from_config
from mmpeft.methods import METHODS
from test_hooks import Snapshot
from test_reliability_support import (HEAD_WIDTH, IMG_SCALE, SWIN_CHANNELS,
                                      TINY_SWIN, TINY_VIT)

COMPARISON = ('adapter', 'adaptformer', 'lora', 'lorand')
VARIANTS = ('adapter_orig', 'adaptformer_orig', 'lora_orig')
TASKS = ('maskrcnn_{}_coco', 'upernet_{}_ade20k', 'fasterrcnn_{}_voc',
         'orientedrcnn_{}_dota')
HOST_BACKBONES = {'swin': 'swinb', 'vit': 'vitb'}
CONFIGS = [
    (f'configs/{name}/{task.format(b)}.py', f'{name}_{host}')
    for name in COMPARISON for host, b in HOST_BACKBONES.items()
    for task in TASKS
]
# The dinov2 host (mmpretrain's ViT) ships UperNet and Mask R-CNN configs
# of the defaults.
DINOV2_TASKS = TASKS[:2]
DINOV2_CONFIGS = [(f'configs/{name}/{task.format("dinov2b")}.py',
                   f'{name}_dinov2')
                  for name in COMPARISON for task in DINOV2_TASKS]
VARIANT_CONFIGS = [(f'configs/{name}/fasterrcnn_{b}_voc.py', f'{name}_{host}')
                   for name in VARIANTS for host, b in HOST_BACKBONES.items()]


def test_every_comparison_method_has_its_configs():
    """Eight task configs per default (two on dinov2), one VOC config per host for each own
    paper's form; the table holds exactly these, variants next to their
    defaults."""
    for names, configs in ((COMPARISON, CONFIGS + DINOV2_CONFIGS),
                           (VARIANTS, VARIANT_CONFIGS)):
        found = {osp.relpath(p, REPO_ROOT) for name in names for p in
                 glob.glob(osp.join(REPO_ROOT, 'configs', name, '*.py'))}
        assert found == {config for config, _ in configs}
    table = {m for m in METHODS if METHODS[m].backbone['type'].startswith(
        'Adapter') and METHODS[m].backbone.get('adapters')}
    everything = CONFIGS + DINOV2_CONFIGS + VARIANT_CONFIGS
    assert {m for _, m in everything} <= table
    for _, method in everything:
        assert osp.isfile(osp.join(REPO_ROOT, METHODS[method].config_base))
        default = method.replace('_orig', '')
        assert METHODS[method].variant_of == ('' if default == method
                                              else default)


@pytest.mark.parametrize('config,method',
                         CONFIGS + DINOV2_CONFIGS + VARIANT_CONFIGS)
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


def backbone_trainable(model, cfg):
    """The backbone parameters that train under ``cfg``: the adapters, and
    what its PEFTFreezeHook policy adds (Houlsby's own form: the norms)."""
    flags = policy_flags(model, policy_from_config(cfg))
    return {n[len('backbone.'):] for n, trains in flags.items()
            if trains and n.startswith('backbone.')}


def train_one_step(cfg):
    """Train ``cfg``; the backbone's weights before and after, and what
    trains in it."""
    runner = Runner.from_cfg(cfg)
    snapshot = Snapshot()
    runner.register_hook(snapshot)
    runner.train()
    return snapshot.params, dict(runner.model.backbone.named_parameters()), \
        backbone_trainable(runner.model, cfg)


def assert_only_adapters_moved(before, after, trained):
    """Nothing outside ``trained`` (the adapters and what the policy adds)
    moved or requires grad, and something in it moved."""
    frozen = [n for n in after if n not in trained]
    assert frozen and trained
    moved = [n for n in frozen if not torch.equal(after[n], before[n])]
    assert not moved, f'frozen weights changed: {moved[:8]}'
    assert all(after[n].requires_grad for n in trained)
    assert not any(after[n].requires_grad for n in frozen)
    assert any(not torch.equal(after[n], before[n]) for n in trained)


@pytest.mark.parametrize(
    'config', [c for c, _ in CONFIGS + VARIANT_CONFIGS if 'fasterrcnn' in c])
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


# Swin-B: widths C and heads of each block (depths 2, 2, 18, 2).
SWIN_B_BLOCKS = [(c, h) for c, h, depth in zip((128, 256, 512, 1024),
                                              (4, 8, 16, 32), (2, 2, 18, 2))
                 for _ in range(depth)]
SWIN_B_PRETRAINED = 86_745_016
SWIN_B_NORMS = 59_392  # its LayerNorms (tests/test_policy_methods.py)


def swin_b_count(method):
    """Trainable backbone parameters of ``method`` on Swin-B, in closed form
    from the official definitions (Leiyi-Hu/mona swin_transformer_<m>.py,
    DongshuoYin/CoLin swin_lorand.py), block by block:

    - adapter: two ``Adapter(dim)``: Linear(C, 64) + Linear(64, C) each;
    - adaptformer: one such branch per block (beside the MLP);
    - lora: ``MergedLinear(C, 3C, r=64, enable_lora=[True, False, True])``:
      lora_A (2r, C), lora_B (2C, r): a rank-64 pair for q and for v;
    - lorand: two ``Lorand(C, 2)``: m = C/2, two ``Lorand_Multi`` of 4
      branches A (in, 8), g (8, 8), B (8, out) -- a kernel per projection
      -- and a bias;
    - the own papers' forms: the same Houlsby / AdaptFormer widths, and one
      rank-64 pair for the whole qkv (A (64, C), B (3C, 64)).
    """
    m, r = 64, 64

    def lorand_linear(n_in, n_out, branches=4, beta=8):
        return branches * (n_in * beta + beta * beta + beta * n_out) + n_out

    per_block = dict(
        adapter=lambda c: 2 * (c * m + m + m * c + c),
        adaptformer=lambda c: c * m + m + m * c + c,
        lora=lambda c: 2 * r * c + 2 * c * r,
        lorand=lambda c: 2 * (lorand_linear(c, c // 2)
                              + lorand_linear(c // 2, c)),
        lora_orig=lambda c: r * c + 3 * c * r)
    per_block.update(adapter_orig=per_block['adapter'],
                     adaptformer_orig=per_block['adaptformer'])
    return sum(per_block[method](c) for c, _ in SWIN_B_BLOCKS)


# What the official code trains on Swin-B, counted by running it: the
# Leiyi-Hu/mona backbones and CoLin's Lorand class with stubbed mm imports
# (README "Comparison methods"); the closed forms above must agree.
OFFICIAL_SWIN_B = dict(adapter=3_107_328, adaptformer=1_553_664,
                       lora=3_080_192, lorand=2_370_816)


@pytest.mark.parametrize('method', COMPARISON)
def test_closed_forms_are_the_official_codes_counts(method):
    assert swin_b_count(method) == OFFICIAL_SWIN_B[method]


def readme_comparison_rows():
    """method -> (trainable params, our %) of the README's Swin-B table."""
    with open(osp.join(REPO_ROOT, 'README.md')) as f:
        text = f.read().split('### Comparison methods', 1)[1]
    rows = {}
    for line in text.split('\n\n### ', 1)[0].splitlines():
        cells = [c.strip() for c in line.strip('|').split('|')]
        if len(cells) == 7 and cells[1].replace(',', '').isdigit():
            rows[cells[0].strip('`')] = (int(cells[1].replace(',', '')),
                                         cells[2])
    return rows


@pytest.mark.parametrize('method', COMPARISON + VARIANTS)
def test_readme_swin_b_counts_are_the_configs(method):
    """The README's numbers are those of the Swin-B config's backbone (what
    tools/count_params.py prints: its adapters row, plus the backbone
    weights the policy trains) and of the official definitions."""
    task = 'maskrcnn' if method in COMPARISON else 'fasterrcnn'
    dataset = 'coco' if method in COMPARISON else 'voc'
    cfg = Config.fromfile(osp.join(
        REPO_ROOT, f'configs/{method}/{task}_swinb_{dataset}.py'))
    init_default_scope(cfg.default_scope)
    model = nn.Module()
    model.backbone = importlib.import_module('mmdet.registry').MODELS.build(
        cfg.model.backbone)
    adapters = set(model.backbone.adapter_param_names())
    params = dict(model.backbone.named_parameters())
    pretrained = sum(p.numel() for n, p in params.items() if n not in adapters)
    assert pretrained == SWIN_B_PRETRAINED
    assert sum(params[n].numel() for n in adapters) == swin_b_count(method)
    trainable = sum(params[n].numel()
                    for n in backbone_trainable(model, cfg))
    assert trainable == swin_b_count(method) + (
        SWIN_B_NORMS if method == 'adapter_orig' else 0)
    count, percent = readme_comparison_rows()[method]
    assert count == trainable
    assert percent == f'{100 * trainable / pretrained:.2f}%'
