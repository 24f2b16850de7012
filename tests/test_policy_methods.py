"""The zero-module methods (mmpeft/methods.py POLICY_METHODS: Fixed, BitFit,
NormTuning, Partial-1 on both hosts): each config builds the stock host with
no adapter and the table's PEFTFreezeHook policy, the policy trains exactly
the part of the backbone its method names, and a training step moves that
part and not one other backbone weight."""
import glob
import importlib
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from torch import nn

from helpers import REPO_ROOT
from mmpeft.engine.peft_freeze_hook import (NORM_TYPES, FreezePolicy,
                                            FreezePolicyError, is_bias,
                                            policy_flags, policy_from_config)
from mmpeft.methods import HOST_TYPES, POLICY_METHODS
from test_comparison_configs import (DINOV2_TASKS, HOST_BACKBONES, TASKS,
                                     tiny_voc_cfg)
from test_hooks import Snapshot
from test_methods import HOST_ARGS

POLICY_NAMES = ('fixed', 'bitfit', 'normtuning', 'partial1')
CONFIGS = [(f'configs/{name}/{task.format(b)}.py', f'{name}_{host}')
           for name in POLICY_NAMES for host, b in HOST_BACKBONES.items()
           for task in TASKS]
DINOV2_CONFIGS = [(f'configs/{name}/{task.format("dinov2b")}.py',
                   f'{name}_dinov2')
                  for name in POLICY_NAMES for task in DINOV2_TASKS]


def test_every_policy_method_has_its_eight_configs():
    found = {osp.relpath(p, REPO_ROOT) for name in POLICY_NAMES
             for p in glob.glob(osp.join(REPO_ROOT, 'configs', name, '*.py'))}
    assert found == {config for config, _ in CONFIGS + DINOV2_CONFIGS}
    assert set(POLICY_METHODS) == {m for _, m in CONFIGS + DINOV2_CONFIGS} | {
        f'full_{host}' for host in HOST_TYPES}


@pytest.mark.parametrize('config,method', CONFIGS + DINOV2_CONFIGS)
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
    """The backbone parameters ``name`` trains, from the modules' types and
    the host's layout (not from the policy code)."""
    params = dict(model.backbone.named_parameters())
    if name == 'fixed':
        return set()
    if name == 'bitfit':
        return {n for n in params
                if n.endswith('.bias') or n.endswith('_bias')}
    if name == 'normtuning':
        return {f'{m}.{p}' for m, module in model.backbone.named_modules()
                if isinstance(module, NORM_TYPES)
                for p, _ in module.named_parameters(recurse=False)}
    if hasattr(model.backbone, 'stages'):  # Swin: last stage + its norm
        last = len(model.backbone.stages) - 1
        return {n for n in params
                if n.startswith((f'stages.{last}.', f'norm{last}.'))}
    last = len(model.backbone.layers) - 1
    return {n for n in params if n.startswith((f'layers.{last}.', 'ln1.'))}


@pytest.mark.parametrize('method', [m for _, m in CONFIGS[::len(TASKS)]] +
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


def test_bitfit_keeps_the_relative_position_tables_frozen():
    model = tiny_detector('swin')
    flags = policy_flags(model, FreezePolicy(train_biases=True))
    tables = [n for n in flags if n.endswith('relative_position_bias_table')]
    assert tables and not any(flags[n] for n in tables)
    assert all(is_bias(n) for n, t in flags.items()
               if t and n.startswith('backbone.'))


def test_partial1_on_a_backbone_without_stages_is_a_clear_error():
    model = nn.Module()
    model.backbone = nn.Linear(2, 2)
    with pytest.raises(FreezePolicyError, match='last stage'):
        policy_flags(model, FreezePolicy(train_last_stage=True))


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
                torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize(
    'config,method', [c for c in CONFIGS if 'fasterrcnn' in c[0]])
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
