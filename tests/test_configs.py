"""Every config under configs/ (except _base_/) builds its model in its own
scope, with as many classes as its dataset has."""
import glob
import importlib
import json
import os.path as osp
import re

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

from helpers import REPO_ROOT
from mmpeft.methods import METHODS

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
    """`make demo` puts step 1's source model at DEMO_SOURCE (tools/compare.py
    demo --source-only), where DEMO_CONFIG loads its backbone from."""
    from mmpeft.comparison import demo_plan
    with open(osp.join(REPO_ROOT, 'Makefile')) as f:
        make = dict(re.findall(r'^(\w+) := (.*)$', f.read(), re.M))
    step2 = Config.fromfile(osp.join(REPO_ROOT, make['DEMO_CONFIG']))
    step1 = demo_plan(['mona']).pretrains
    assert [s.host for s in step1] == ['swin']
    assert step1[0].checkpoint == osp.join(REPO_ROOT, make['DEMO_SOURCE'])
    assert Config.fromfile(step1[0].config).model.backbone.type == \
        'SwinTransformer'
    assert step2.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint=make['DEMO_SOURCE'])


# --------------------------------------------------- method config layout
# The model and custom_hooks of every method task config, dumped from the
# configs as they were before the method config bases (configs/_base_/
# methods/) existed, by this module's `dump_method_configs` run on that tree:
#   git archive 726f42e configs | tar -x -C /tmp/old && python -c "import sys;
#   sys.path.insert(0, 'tests'); import test_configs as t;
#   t.write_fixture('/tmp/old', 'tests/data/method_configs_before_bases.json')"
LAYOUT_FIXTURE = osp.join(REPO_ROOT, 'tests', 'data',
                          'method_configs_before_bases.json')
METHOD_DIRS = ('mona', 'repadapter', 'mimi')


def method_task_configs(root=REPO_ROOT):
    return sorted(
        osp.relpath(path, root) for method in METHOD_DIRS
        for path in glob.glob(osp.join(root, 'configs', method, '*.py')))


def dump_method_configs(root=REPO_ROOT) -> dict:
    """``{config: {'model': ..., 'custom_hooks': ...}}`` as JSON data."""
    out = {}
    for config in method_task_configs(root):
        cfg = Config.fromfile(osp.join(root, config),
                              import_custom_modules=False)
        out[config] = json.loads(
            json.dumps(dict(model=cfg.model.to_dict(),
                            custom_hooks=[dict(h)
                                          for h in cfg.custom_hooks])))
    return out


def write_fixture(root, path):
    with open(path, 'w') as f:
        json.dump(dump_method_configs(root), f, indent=1, sort_keys=True)
        f.write('\n')


def with_bias_recipe(dumped):
    """The one intended change: RepAdapter's segmentation recipe."""
    for hook in dumped['custom_hooks']:
        if hook['type'] == 'PEFTFreezeHook':
            hook['train_biases'] = True
    return dumped


INTENDED_CHANGES = {
    'configs/repadapter/upernet_vitb_ade20k.py': with_bias_recipe,
}


def test_method_configs_build_what_they_built_before_the_bases():
    with open(LAYOUT_FIXTURE) as f:
        before = json.load(f)
    now = dump_method_configs()
    assert set(before) <= set(now)  # no task config lost (new ones allowed)
    for config, dumped in before.items():
        expected = INTENDED_CHANGES.get(config, lambda d: d)(dumped)
        # configs/_base_/peft_hooks.py gained these two for every method
        # (one run per work dir, divergence guard on by default).
        expected['custom_hooks'] = expected['custom_hooks'] + [
            dict(type='WorkDirLockHook'), dict(type='NaNGuardHook')]
        assert now[config]['model'] == expected['model'], config
        hooks = [sorted(json.dumps(h, sort_keys=True) for h in d)
                 for d in (now[config]['custom_hooks'],
                           expected['custom_hooks'])]
        assert hooks[0] == hooks[1], config  # in any order: priorities rule


@pytest.mark.parametrize('method', METHODS)
def test_each_method_has_its_config_base(method):
    """The method table's config base exists, sets the table's backbone
    type and is what every task config of the method inherits."""
    base_path = osp.join(REPO_ROOT, METHODS[method].config_base)
    base = Config.fromfile(base_path, import_custom_modules=False)
    assert base.peft_backbone.type == METHODS[method].backbone['type']
    assert {'PEFTFreezeHook', 'AdapterMergeHook'} <= {
        h.type for h in base.custom_hooks}
    host = METHODS[method].host  # configs/<method>/*_<host>b_*.py
    folder = method[:-len(host) - 1] if method.endswith(f'_{host}') else method
    pattern = f'*_{host}b_*.py'
    configs = glob.glob(osp.join(REPO_ROOT, 'configs', folder, pattern))
    assert configs
    for config in configs:
        bases = Config._get_base_files(config)
        assert [osp.normpath(osp.join(osp.dirname(config), b))
                for b in bases][-1] == osp.normpath(base_path), config
        code = [line for line in open(config)
                if line.strip() and not line.lstrip().startswith('#')]
        assert len(code) <= 20, f'{config}: {len(code)} lines of code'
