"""The method configs run the PEFT hooks without the user adding them
(configs/_base_/peft_hooks.py), and the optimizer's per-frozen-parameter
warnings are one summary line (mmpeft.compat)."""
import glob
import json
import logging
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import HOOKS
from mmengine.runner import Runner
from torch import nn

from helpers import REPO_ROOT
from mmpeft.engine.export import build_from_config
from test_reliability_support import tiny_method_cfg

METHOD_CONFIGS = sorted(
    osp.relpath(path, REPO_ROOT) for method in ('mona', 'repadapter', 'mimi')
    for path in glob.glob(osp.join(REPO_ROOT, 'configs', method, '*.py')))
BASELINE_CONFIGS = sorted(
    osp.relpath(path, REPO_ROOT)
    for path in glob.glob(osp.join(REPO_ROOT, 'configs/baselines/*.py')))
PEFT_HOOKS = ['WorkDirLockHook', 'PEFTFreezeHook', 'AdapterMergeHook',
              'NaNGuardHook']
SKIPPED = 'is skipped since its requires_grad=False'


def hook_types(cfg):
    return [hook['type'] for hook in cfg.get('custom_hooks', [])]


def test_every_method_has_configs():
    # 4 tasks x 3 methods, MiMi's official round structure on VOC, and Mona
    # and RepAdapter on the dinov2 host (UperNet ADE20K, Mask R-CNN COCO)
    assert len(METHOD_CONFIGS) == 13 + 4


@pytest.mark.parametrize('config', METHOD_CONFIGS)
def test_method_config_runs_the_peft_hooks(config):
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    expected = PEFT_HOOKS + (['MiMiPruneHook'] if 'mimi' in config else [])
    assert sorted(hook_types(cfg)) == sorted(expected)
    for hook in cfg.custom_hooks:
        HOOKS.build(hook)  # registered, valid arguments


@pytest.mark.parametrize('config', BASELINE_CONFIGS)
def test_baselines_do_not_freeze(config):
    """Full fine-tuning: the freeze hook would freeze the whole backbone."""
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    assert not set(hook_types(cfg)) & set(PEFT_HOOKS)


class Recorder(logging.Handler):

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_optimizer_says_once_what_it_leaves_out():
    model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2), nn.Linear(2, 2))
    for param in [*model[0].parameters(), model[1].weight]:
        param.requires_grad = False
    constructor = DefaultOptimWrapperConstructor(
        dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)),
        paramwise_cfg=dict(norm_decay_mult=0.0))
    logger = MMLogger.get_current_instance()
    recorder = Recorder()
    logger.addHandler(recorder)
    try:
        optim_wrapper = constructor(model)
    finally:
        logger.removeHandler(recorder)
    assert not [m for m in recorder.messages if SKIPPED in m]
    assert ('3 frozen parameters (requires_grad=False) left out of the '
            'optimizer.') in recorder.messages
    # Other messages of the constructor still come through.
    assert 'paramwise_options -- 1.bias:weight_decay=0.0' in recorder.messages
    # OptimWrapper appends a dummy group (its base lr): compare model params.
    in_optim = {id(p) for g in optim_wrapper.param_groups for p in g['params']}
    params = {id(p): p for p in model.parameters()}
    assert {i for i in params if i in in_optim} == {
        i for i, p in params.items() if p.requires_grad}
    assert logger.filters == []  # the counting filter is gone


def run_log(work_dir):
    (log, ) = glob.glob(osp.join(str(work_dir), '*', '*.log'))
    with open(log) as f:
        return f.read()


@pytest.mark.parametrize('method,iters', [('mona', 1), ('repadapter', 1),
                                          ('mimi', 2)])
def test_config_run_writes_table_and_deploy_files(method, iters, demo_data,
                                                  tmp_path):
    """The shipped config, shrunk, with no hook added by the test."""
    cfg = tiny_method_cfg(method, demo_data, tmp_path, max_iters=iters)
    assert cfg.optim_wrapper.get('paramwise_cfg')  # mmengine would warn
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model

    # PEFTFreezeHook: the table in the log and in peft_params.json.
    log = run_log(tmp_path)
    assert 'PEFT parameters:' in log
    with open(tmp_path / 'peft_params.json') as f:
        groups = {row['group']: row for row in json.load(f)['groups']}
    assert groups['backbone (pretrained)']['trainable'] == 0
    assert groups['adapters']['trainable'] > 0

    # The optimizer's skipped parameters: one line, not one per parameter.
    frozen = sum(1 for p in model.parameters() if not p.requires_grad)
    assert frozen > 20  # one warning each without the shim
    assert SKIPPED not in log
    assert log.count('left out of the optimizer') == 1
    assert (f'{frozen} frozen parameters (requires_grad=False) left out of '
            'the optimizer.') in log

    # AdapterMergeHook: deploy checkpoint + config and adapter-only file
    # beside the training checkpoint.
    stem = tmp_path / f'iter_{iters}'
    for suffix in ('.pth', '_deploy.pth', '_deploy.py', '_adapters.pth'):
        assert osp.isfile(f'{stem}{suffix}'), suffix
    deploy_cfg = Config.fromfile(f'{stem}_deploy.py')
    assert not set(hook_types(deploy_cfg)) & {*PEFT_HOOKS, 'MiMiPruneHook'}
    deployed = build_from_config(deploy_cfg)
    deployed.load_state_dict(
        torch.load(f'{stem}_deploy.pth', weights_only=False)['state_dict'],
        strict=True)
    if method == 'mimi':
        # The pruning round at iteration 1 comes before the save: the deploy
        # model keeps only the live neurons.
        widths = model.backbone.adapter_widths()
        initial = [a.hidden_dim for _, a in model.backbone.named_slots()]
        assert sum(widths) < sum(initial)
        assert deploy_cfg.model.backbone.adapter_widths == widths
        assert [a.hidden_dim for _, a in deployed.backbone.named_slots()
                ] == widths
    elif method == 'repadapter':  # folded into qkv / fc1: a stock ViT
        assert deploy_cfg.model.backbone.type == 'mmseg.VisionTransformer'
    else:
        assert deploy_cfg.model.backbone.adapter_cfg.deploy is True
