"""helpers.tiny_runner_cfg shrinks the full-size configs (every dataset
layout of configs/_base_/datasets/) to small batches of the generated data."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from helpers import REPO_ROOT, tiny_runner_cfg

BASELINES = sorted(
    osp.relpath(path, REPO_ROOT)
    for path in glob.glob(osp.join(REPO_ROOT, 'configs/baselines/*.py')))


def find_pretrained(cfg):
    if isinstance(cfg, dict):
        if cfg.get('type') == 'Pretrained':
            return True
        return any(find_pretrained(v) for v in cfg.values())
    if isinstance(cfg, (list, tuple)):
        return any(find_pretrained(v) for v in cfg)
    return False


def test_baselines_found():
    assert len(BASELINES) >= 4


@pytest.mark.parametrize('config', BASELINES)
def test_tiny_runner_cfg(config, demo_data, tmp_path):
    full = osp.join(REPO_ROOT, config)
    cfg = tiny_runner_cfg(full, demo_data, tmp_path, img_scale=(96, 64))
    assert find_pretrained(Config.fromfile(full).model)
    assert not find_pretrained(cfg.model)
    assert cfg.train_cfg.max_iters == 1
    init_default_scope(cfg.default_scope)
    for name, batch_size in (('train_dataloader', 2), ('val_dataloader', 1)):
        loader = Runner.build_dataloader(cfg[name], seed=0)
        assert loader.dataset.data_root.startswith(demo_data)
        batch = next(iter(loader))
        assert len(batch['inputs']) == batch_size
        for img in batch['inputs']:
            assert img.shape[1] <= 64 and img.shape[2] <= 96
