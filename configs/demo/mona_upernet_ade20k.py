# CPU demo: UperNet with a tiny Swin on the generated ADE20K-format data
# (`python tools/make_demo_data.py` writes data/demo/), from random
# initialisation. The backbone is mmdet's SwinTransformer (the class mmpeft's
# Swin backbones extend), reached from the mmseg scope by its `mmdet.` prefix.
_base_ = [
    '../_base_/models/upernet_swin.py', '../_base_/datasets/ade20k.py',
    '../_base_/schedules/seg_adamw_160k.py', '../_base_/runtimes/mmseg.py'
]
data_root = 'data/demo/ade/ADEChallengeData2016'
img_scale = (256, 256)
crop_size = (192, 192)
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='mmdet.SwinTransformer',  # MonaSwinTransformer: same arguments
        embed_dims=32,
        depths=[1, 1, 2, 1],
        num_heads=[1, 2, 4, 8],
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        convert_weights=False,
        init_cfg=None),
    decode_head=dict(
        in_channels=[32, 64, 128, 256], channels=64, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=128, channels=32, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(
        type='RandomResize',
        scale=img_scale,
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 300
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=50,
        end=max_iters,
        by_epoch=False)
]
optim_wrapper = dict(optimizer=dict(lr=1e-3))

default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_iters))

# Fixed seed: the demo's metric is reproducible from run to run.
randomness = dict(seed=0)
