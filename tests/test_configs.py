"""Every config under configs/ (except _base_/) builds its model in its own
scope, with as many classes as its dataset has."""
import glob
import importlib
import os.path as osp
import re

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

from helpers import REPO_ROOT

CONFIGS = sorted(
    osp.relpath(path, REPO_ROOT) for path in glob.glob(
        osp.join(REPO_ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in path.split(osp.sep))
DEMO_MONA = [c for c in CONFIGS if c.startswith('configs/demo/mona_')]


def dataset_classes(cfg, registry):
    """Class names the config trains on: its metainfo, else the stock ones."""
    dataset = cfg.train_dataloader.dataset
    while 'dataset' in dataset or 'datasets' in dataset:
        dataset = dataset.get('dataset') or dataset['datasets'][0]
    if 'classes' in dataset.get('metainfo', {}):
        return dataset.metainfo.classes
    return registry.DATASETS.get(dataset.type).METAINFO['classes']


def heads(model):
    """The modules that predict classes (one per cascade stage)."""
    if hasattr(model, 'decode_head'):  # mmseg
        return [model.decode_head]
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is not None:  # two-stage mmdet / mmrotate
        bbox_head = roi_head.bbox_head
        return list(bbox_head) if hasattr(bbox_head, '__iter__') else [
            bbox_head
        ]
    return [model.bbox_head]  # single-stage


def test_configs_found():
    assert {
        'configs/baselines/maskrcnn_swinb_coco.py',
        'configs/demo/mona_fasterrcnn_voc.py'
    } <= set(CONFIGS)


@pytest.mark.parametrize('config', CONFIGS)
def test_model_builds(config):
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    init_default_scope(cfg.default_scope)
    registry = importlib.import_module(f'{cfg.default_scope}.registry')
    model = registry.MODELS.build(cfg.model)  # no init_weights: no download
    backbone_type = cfg.model.backbone.type.split('.')[-1]
    assert type(model.backbone).__name__ == backbone_type
    num_classes = len(dataset_classes(cfg, registry))
    for head in heads(model):
        assert head.num_classes == num_classes


@pytest.mark.parametrize('config', DEMO_MONA)
def test_demo_trains_mona_with_peft_hooks(config):
    """A demo named Mona trains Mona: the adapter backbone, the freezing
    policy with its parameter table, and the deploy / adapter exports."""
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    assert cfg.model.backbone.type == 'MonaSwinTransformer'
    assert cfg.model.backbone.adapter_cfg.type == 'Mona'
    hooks = [hook['type'] for hook in cfg.custom_hooks]
    assert {'PEFTFreezeHook', 'AdapterMergeHook'} <= set(hooks)


def test_make_demo_step2_loads_step1_checkpoint():
    """`make demo` trains DEMO_PRETRAIN_CONFIG into DEMO_PRETRAIN_WORK_DIR,
    then DEMO_CONFIG must load the backbone of its last checkpoint."""
    with open(osp.join(REPO_ROOT, 'Makefile')) as f:
        make = dict(re.findall(r'^(\w+) := (.*)$', f.read(), re.M))
    step1 = Config.fromfile(osp.join(REPO_ROOT, make['DEMO_PRETRAIN_CONFIG']))
    step2 = Config.fromfile(osp.join(REPO_ROOT, make['DEMO_CONFIG']))
    assert step1.model.backbone.type == 'SwinTransformer'
    assert step2.model.backbone.init_cfg == dict(
        type='Pretrained',
        checkpoint=f"{make['DEMO_PRETRAIN_WORK_DIR']}/"
        f'iter_{step1.train_cfg.max_iters}.pth')
