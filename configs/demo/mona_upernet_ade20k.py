# CPU demo: UperNet with a tiny Mona Swin on the generated ADE20K-format data
# (`python tools/make_demo_data.py` writes data/demo/). MonaSwinTransformer
# extends mmdet's SwinTransformer and sits in mmengine's root registry, which
# the mmseg registry falls back to: no scope prefix. `_delete_`: the base's
# mmseg Swin takes other arguments.
# The backbone is MonaSwinTransformer, frozen except its adapters; there is
# no pretrained tiny Swin, so its frozen weights are random (it warns). The
# run shows the Mona model, the PEFT hooks and the merged deploy checkpoint,
# not transfer: `make demo` (mona_fasterrcnn_voc.py) fine-tunes a backbone
# pretrained in its step 1 instead.
_base_ = [
    '../_base_/models/upernet_swin.py', '../_base_/datasets/ade20k.py',
    '../_base_/schedules/seg_adamw_160k.py', '../_base_/runtimes/mmseg.py',
    './_base_/tiny_swin.py', '../_base_/peft_hooks.py'
]
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
data_root = 'data/demo/ade/ADEChallengeData2016'
img_scale = (256, 256)
crop_size = (192, 192)
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(_delete_=True, **_base_.tiny_mona_swin),
    decode_head=dict(
        in_channels=_base_.tiny_swin_widths, channels=64, norm_cfg=norm_cfg),
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

train_cfg = _base_.iter_train_cfg
param_scheduler = [
    _base_.warmup,
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=50,
        end=_base_.max_iters,
        by_epoch=False)
]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = _base_.iter_default_hooks
