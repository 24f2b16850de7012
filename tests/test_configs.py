"""Every config under configs/ (except _base_/) builds its model in its own
scope, with as many classes as its dataset has."""
import glob
import importlib
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

from helpers import REPO_ROOT

CONFIGS = sorted(
    osp.relpath(path, REPO_ROOT) for path in glob.glob(
        osp.join(REPO_ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in path.split(osp.sep))


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
