"""Tiny PEFT runs for the hook / export tests: the repo's full-size configs
shrunk by helpers.tiny_runner_cfg, then narrowed to a few-thousand-parameter
backbone so that a training step takes a second on a CPU."""
import os.path as osp

from helpers import REPO_ROOT, tiny_runner_cfg

MONA_SEG = 'configs/demo/mona_upernet_ade20k.py'
REPADAPTER_SEG = 'configs/repadapter/upernet_vitb_ade20k.py'


def with_peft_hooks(cfg):
    """The PEFT hooks, and batches of 2: UperNet's BatchNorm after its 1x1
    pooling cannot train on one image."""
    cfg.custom_hooks = [
        dict(type='PEFTFreezeHook'),
        dict(type='AdapterMergeHook')
    ]
    cfg.train_dataloader.batch_size = 2
    return cfg


def mona_seg_cfg(demo_data,
                 work_dir,
                 max_iters=2,
                 backbone='MonaSwinTransformer'):
    """UperNet + a 32-wide 4-stage Swin with adapters, on generated ADE20K:
    the Mona demo, or its Swin arguments with another `backbone` class."""
    cfg = tiny_runner_cfg(osp.join(REPO_ROOT, MONA_SEG),
                          demo_data,
                          work_dir,
                          max_iters=max_iters,
                          img_scale=(64, 64))
    if backbone != cfg.model.backbone.type:
        cfg.model.backbone.pop('adapter_cfg')  # Mona's
        cfg.model.backbone.type = backbone
    return with_peft_hooks(cfg)


def repadapter_seg_cfg(demo_data, work_dir, max_iters=2):
    """UperNet + a 64-wide 4-layer RepAdapter ViT, on generated ADE20K."""
    cfg = tiny_runner_cfg(osp.join(REPO_ROOT, REPADAPTER_SEG),
                          demo_data,
                          work_dir,
                          max_iters=max_iters,
                          img_scale=(64, 64))
    cfg.model.backbone.update(img_size=(64, 64),
                              embed_dims=64,
                              num_layers=4,
                              num_heads=2,
                              mlp_ratio=2,
                              out_indices=(0, 1, 2, 3))
    cfg.model.neck.update(in_channels=[64] * 4, out_channels=64)
    cfg.model.decode_head.update(in_channels=[64] * 4, channels=32)
    cfg.model.auxiliary_head.update(in_channels=64, channels=32)
    return with_peft_hooks(cfg)
