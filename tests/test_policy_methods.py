"""The zero-module methods (mmpeft/methods.py POLICY_METHODS: Fixed, BitFit,
NormTuning, Partial-1 on both hosts, and the own papers' forms of BitFit and
Partial-1): each config builds the stock host with no adapter and the
table's PEFTFreezeHook policy, the policy trains exactly the part of the
backbone its method names (from the official code's name rules), the Swin-B
counts are the official code's, and a training step moves that part and not
one other backbone weight."""
import glob
import importlib
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from torch import nn

from helpers import REPO_ROOT, assert_close_to_scale
from mmpeft.engine.peft_freeze_hook import (NORM_TYPES, FreezePolicy,
                                            FreezePolicyError, is_bias,
                                            policy_flags, policy_from_config)
from mmpeft.models import merge_adapters
from mmpeft.methods import HOST_TYPES, POLICY_METHODS
from test_comparison_configs import (DINOV2_TASKS, HOST_BACKBONES, TASKS,
                                     tiny_voc_cfg)
from test_hooks import Snapshot
from test_methods import HOST_ARGS

POLICY_NAMES = ('fixed', 'bitfit', 'normtuning', 'partial1')
VARIANTS = ('bitfit_orig', 'partial1_orig')
CONFIGS = [(f'configs/{name}/{task.format(b)}.py', f'{name}_{host}')
           for name in POLICY_NAMES for host, b in HOST_BACKBONES.items()
           for task in TASKS]
DINOV2_CONFIGS = [(f'configs/{name}/{task.format("dinov2b")}.py',
                   f'{name}_dinov2')
                  for name in POLICY_NAMES for task in DINOV2_TASKS]
VARIANT_CONFIGS = [(f'configs/{name}/fasterrcnn_{b}_voc.py', f'{name}_{host}')
                   for name in VARIANTS for host, b in HOST_BACKBONES.items()]


def test_every_policy_method_has_its_configs():
    for names, configs in ((POLICY_NAMES, CONFIGS + DINOV2_CONFIGS),
                           (VARIANTS, VARIANT_CONFIGS)):
        found = {osp.relpath(p, REPO_ROOT) for name in names for p in
                 glob.glob(osp.join(REPO_ROOT, 'configs', name, '*.py'))}
        assert found == {config for config, _ in configs}
    assert set(POLICY_METHODS) == {
        m for _, m in CONFIGS + DINOV2_CONFIGS + VARIANT_CONFIGS} | {
            f'full_{host}' for host in HOST_TYPES}
    for _, method in VARIANT_CONFIGS:
        assert POLICY_METHODS[method].variant_of == method.replace('_orig', '')


@pytest.mark.parametrize('config,method',
                         CONFIGS + DINOV2_CONFIGS + VARIANT_CONFIGS)
def test_config_builds_the_stock_host_with_the_table_policy(config, method):
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    table = POLICY_METHODS[method]
    assert cfg.model.backbone.type == HOST_TYPES[table.host]
    assert cfg.model.backbone.adapters.to_dict() == {}
    assert cfg.model.backbone.init_cfg.type == 'Pretrained'
    assert policy_from_config(cfg) == FreezePolicy(**table.policy)
    assert {'AdapterMergeHook', 'WorkDirLockHook', 'NaNGuardHook'} <= {
        hook['type'] for hook in cfg.custom_hooks}
    init_default_scope(cfg.default_scope)
    registry = importlib.import_module(f'{cfg.default_scope}.registry')
    model = registry.MODELS.build(cfg.model)  # no init_weights: no download
    assert not any(True for _ in model.backbone.named_adapters())
    assert not any(p.requires_grad for p in model.backbone.parameters())


def tiny_detector(host):
    """A model with a tiny host backbone (no adapters) and a neck and head."""
    model = nn.Module()
    model.backbone = MODELS.build(
        dict(HOST_ARGS[host][1], type=HOST_TYPES[host], adapters=dict(),
             **({'final_norm': True} if host == 'vit' else {})))
    model.neck = nn.Linear(2, 2)
    model.bbox_head = nn.Linear(2, 2)
    return model


def expected_backbone_trainable(model, name):
    """The backbone parameters ``name`` trains, from the official code's
    name rules (Leiyi-Hu/mona swin_transformer_<name>.py freezes every
    parameter whose name lacks 'bias' / 'norm' / 'layers.3.blocks.1'), the
    modules' types and the host's layout (not from the policy code)."""
    params = dict(model.backbone.named_parameters())
    if name == 'fixed':
        return set()
    if name == 'bitfit':
        return {n for n in params if 'bias' in n}
    if name == 'bitfit_orig':
        return {n for n in params
                if n.endswith('.bias') or n.endswith('_bias')}
    if name == 'normtuning':
        return {f'{m}.{p}' for m, module in model.backbone.named_modules()
                if isinstance(module, NORM_TYPES)
                for p, _ in module.named_parameters(recurse=False)}
    swin = hasattr(model.backbone, 'stages')
    last = len(model.backbone.stages if swin else model.backbone.layers) - 1
    if name == 'partial1':  # the last block, no output norm
        block = (f'stages.{last}.blocks.'
                 f'{len(model.backbone.stages[last].blocks) - 1}.'
                 if swin else f'layers.{last}.')
        return {n for n in params if n.startswith(block)}
    # partial1_orig: the last stage with its output norm
    prefixes = (f'stages.{last}.', f'norm{last}.') if swin else (
        f'layers.{last}.', 'ln1.')
    return {n for n in params if n.startswith(prefixes)}


@pytest.mark.parametrize(
    'method', [m for _, m in CONFIGS[::len(TASKS)] + VARIANT_CONFIGS] +
    [m for _, m in DINOV2_CONFIGS[::len(DINOV2_TASKS)]])
def test_policy_trains_exactly_its_part_of_the_backbone(method):
    table = POLICY_METHODS[method]
    model = tiny_detector(table.host)
    flags = policy_flags(model, FreezePolicy(**table.policy))
    trained = {n[len('backbone.'):] for n, t in flags.items()
               if t and n.startswith('backbone.')}
    name = method.rsplit('_', 1)[0]
    assert trained == expected_backbone_trainable(model, name)
    assert (trained != set()) == (name != 'fixed')
    assert flags['neck.weight'] and flags['bbox_head.weight']


def test_bitfit_trains_the_tables_and_its_own_form_keeps_them_frozen():
    """The Mona paper's BitFit ('bias' in the name) trains Swin's
    relative-position bias tables; BitFit's own form, bias vectors only,
    keeps them frozen; the tables alone are `train_bias_tables`."""
    model = tiny_detector('swin')
    tables = [n for n, _ in model.named_parameters()
              if n.endswith('relative_position_bias_table')]
    assert tables
    paper = policy_flags(model,
                         FreezePolicy(**POLICY_METHODS['bitfit_swin'].policy))
    assert all(paper[n] for n in tables)
    own = policy_flags(model, FreezePolicy(train_biases=True))
    assert not any(own[n] for n in tables)
    assert all(is_bias(n) for n, t in own.items()
               if t and n.startswith('backbone.'))
    only_tables = policy_flags(model, FreezePolicy(train_bias_tables=True))
    assert {n for n, t in only_tables.items()
            if t and n.startswith('backbone.')} == set(tables)


def test_partial1_trains_one_block_and_its_own_form_the_stage():
    """Partial-1 as the Mona paper's code runs it is the last block of the
    last stage (Swin: stages.1.blocks.1 of this two-stage Swin, not block
    0, not norm1); its own form is the whole stage with its norm."""
    model = tiny_detector('swin')
    flags = policy_flags(model, FreezePolicy(train_last_block=True))
    trained = {n for n, t in flags.items() if t and n.startswith('backbone.')}
    assert trained and all(n.startswith('backbone.stages.1.blocks.1.')
                           for n in trained)
    stage = policy_flags(model, FreezePolicy(train_last_stage=True))
    stage = {n for n, t in stage.items() if t and n.startswith('backbone.')}
    assert trained < stage
    assert any(n.startswith('backbone.stages.1.blocks.0.') for n in stage)
    assert any(n.startswith('backbone.norm1.') for n in stage)


@pytest.mark.parametrize('policy, words', [
    (dict(train_last_stage=True), 'last stage'),
    (dict(train_last_block=True), 'does not list its blocks')])
def test_partial1_on_a_backbone_without_stages_is_a_clear_error(policy,
                                                               words):
    model = nn.Module()
    model.backbone = nn.Linear(2, 2)
    with pytest.raises(FreezePolicyError, match=words):
        policy_flags(model, FreezePolicy(**policy))


# What the official code trains on Swin-B (counted by running Leiyi-Hu/mona's
# swin_transformer_<name>.py, README "Freeze-policy methods"), and the
# closed forms of its name rules over Swin-B's blocks.
OFFICIAL_SWIN_B = dict(bitfit=201_656, normtuning=59_392,
                       partial1=12_601_632)


def swin_b_policy_count(name):
    """Per block of width C with h heads: biases of norm1, qkv, proj, norm2,
    fc1, fc2 (11C) and the (2*7-1)^2 x h relative-position table; norms
    4C; the last block 12 C^2 + 13 C + 169 h. Outside the blocks: the patch
    embedding's conv and norm biases (2 x 128), the patch-merging norms
    (4C of stages 0-2), the output norms norm0-norm3."""
    blocks = [(c, h) for c, h, depth in zip((128, 256, 512, 1024),
                                           (4, 8, 16, 32), (2, 2, 18, 2))
              for _ in range(depth)]
    merging = sum(4 * c for c in (128, 256, 512))
    outputs = sum((128, 256, 512, 1024))
    if name == 'bitfit':
        return sum(11 * c + 169 * h for c, h in blocks) + 2 * 128 + \
            merging + outputs
    if name == 'bitfit_orig':
        return sum(11 * c for c, _ in blocks) + 2 * 128 + merging + outputs
    if name == 'normtuning':
        return sum(4 * c for c, _ in blocks) + 2 * 128 + 2 * merging + \
            2 * outputs
    c, h = blocks[-1]
    block = 12 * c * c + 13 * c + 169 * h
    return block if name == 'partial1' else 2 * block + 2 * c


SWIN_B = dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))


@pytest.fixture(scope='module')
def swin_b_detector():
    model = nn.Module()
    model.backbone = MODELS.build(dict(type=HOST_TYPES['swin'],
                                       adapters=dict(), **SWIN_B))
    return model


@pytest.mark.parametrize('name', ['bitfit', 'normtuning', 'partial1',
                                  'bitfit_orig', 'partial1_orig'])
def test_swin_b_counts_are_the_official_codes(name, swin_b_detector):
    """The policy on Swin-B trains exactly the official code's count (the
    defaults) and the closed form of each rule (all)."""
    if name in OFFICIAL_SWIN_B:
        assert swin_b_policy_count(name) == OFFICIAL_SWIN_B[name]
    flags = policy_flags(swin_b_detector, FreezePolicy(
        **POLICY_METHODS[f'{name}_swin'].policy))
    params = dict(swin_b_detector.named_parameters())
    assert sum(params[n].numel() for n, t in flags.items() if t) == \
        swin_b_policy_count(name)
    assert sum(p.numel() for p in params.values()) == 86_745_016


@pytest.mark.parametrize('host', sorted(HOST_TYPES))
@pytest.mark.parametrize('name', ['normtuning', 'partial1', 'bitfit'])
def test_trained_part_deploys_as_the_stock_backbone(name, host):
    """Training the policy's part (moved off the pretrained weights here)
    leaves a model that merge_adapters turns into a stock state dict with
    the same outputs: nothing to fold, the trained weights are the
    backbone's own."""
    stock_cls, args = HOST_ARGS[host]
    torch.manual_seed(0)
    stock = stock_cls(**args)
    model = tiny_detector(host)
    model.backbone = MODELS.build(dict(args, type=HOST_TYPES[host],
                                       adapters=dict()))
    model.backbone.load_state_dict(stock.state_dict(), strict=True)
    flags = policy_flags(model, FreezePolicy(
        **POLICY_METHODS[f'{name}_{host}'].policy))
    with torch.no_grad():
        for n, param in model.named_parameters():
            if flags[n] and n.startswith('backbone.'):
                param.add_(torch.randn_like(param) * 0.1)
    model.backbone.eval(), stock.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model.backbone(x)
        merge_adapters(model)
        stock.load_state_dict(model.backbone.state_dict(), strict=True)
        for out, ref in zip(stock(x), expected):
            torch.testing.assert_close(out, ref, rtol=1e-5,
                                       atol=1e-6 * ref.abs().max())


def test_no_adapters_is_the_stock_backbone():
    for host, (stock_cls, args) in HOST_ARGS.items():
        torch.manual_seed(0)
        stock = stock_cls(**args)
        model = MODELS.build(dict(args, type=HOST_TYPES[host],
                                  adapters=dict()))
        model.load_state_dict(stock.state_dict(), strict=True)
        stock.eval(), model.eval()
        x = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            for out, ref in zip(model(x), stock(x)):
                assert_close_to_scale(out, ref)


@pytest.mark.parametrize(
    'config,method',
    [c for c in CONFIGS + VARIANT_CONFIGS if 'fasterrcnn' in c[0]])
def test_one_step_moves_exactly_the_policy_part(config, method, demo_data,
                                               tmp_path):
    from mmengine.runner import Runner
    cfg = tiny_voc_cfg(config, demo_data, tmp_path)
    cfg.optim_wrapper.optimizer.lr = 1e-2
    runner = Runner.from_cfg(cfg)
    snapshot = Snapshot()
    runner.register_hook(snapshot)
    runner.train()
    after = dict(runner.model.backbone.named_parameters())
    name = method.rsplit('_', 1)[0]
    trained = expected_backbone_trainable(runner.model, name)
    moved = {n for n in after if not torch.equal(after[n], snapshot.params[n])}
    assert moved <= trained, f'frozen weights moved: {sorted(moved - trained)}'
    assert (moved != set()) == (name != 'fixed')
    assert {n for n, p in after.items() if p.requires_grad} == trained
    assert osp.isfile(osp.join(runner.work_dir, 'peft_params.json'))
