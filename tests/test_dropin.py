"""Drop-in use: mmdet's own Swin Mask R-CNN config, installed with mmdet,
trains with an mmpeft backbone after the README's two-line change."""
import os.path as osp

import mmdet
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from helpers import tiny_runner_cfg
from test_hooks import Snapshot

STOCK = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', 'swin',
                 'mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')

# The README's "Drop-in use" config, verbatim.
README_CONFIG = """\
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
model = dict(backbone=dict(type='{backbone}'))
"""


def test_readme_change_is_the_stock_config_with_another_backbone(tmp_path):
    config = tmp_path / 'mona_mask_rcnn.py'
    config.write_text(README_CONFIG.format(backbone='MonaSwinTransformer'))
    ours, stock = Config.fromfile(str(config)), Config.fromfile(STOCK)
    stock.model.backbone.type = 'MonaSwinTransformer'
    model = ours.model.to_dict()
    assert model.pop('_scope_') == 'mmdet'  # `mmdet::` builds in mmdet's scope
    assert model == stock.model.to_dict()


@pytest.mark.slow  # a full-size Swin-T Mask R-CNN step per backbone
@pytest.mark.parametrize('backbone', ['MonaSwinTransformer', 'MiMiSwin'])
def test_stock_mmdet_swin_config_trains_with_peft_backbone(
        backbone, demo_data, tmp_path):
    cfg = Config.fromfile(STOCK)
    cfg.model.backbone.type = backbone
    cfg.model.backbone.init_cfg = None  # no download: random "pretrained"
    cfg.custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
    config = str(tmp_path / 'dropin.py')
    cfg.dump(config)
    cfg = tiny_runner_cfg(config, demo_data, tmp_path, max_iters=1)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.default_hooks.checkpoint.interval = 10  # no checkpoint: one step only

    runner = Runner.from_cfg(cfg)
    snapshot = Snapshot()
    runner.register_hook(snapshot)
    runner.train()

    params = dict(runner.model.backbone.named_parameters())
    frozen = [n for n in params if 'adapter' not in n]
    adapters = [n for n in params if 'adapter' in n]
    assert frozen and adapters
    assert all(torch.equal(params[n], snapshot.params[n]) for n in frozen)
    assert all(params[n].requires_grad for n in adapters)
    assert any(not torch.equal(params[n], snapshot.params[n])
               for n in adapters)
