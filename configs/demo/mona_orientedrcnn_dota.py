# CPU demo: Oriented R-CNN (le90) with a tiny Mona Swin on the generated
# DOTA-format data (`python tools/make_demo_data.py` writes data/demo/).
# Validated on the generated (labelled) test/ split.
# The backbone is MonaSwinTransformer, frozen except its adapters; there is
# no pretrained tiny Swin, so its frozen weights are random (it warns). The
# run shows the Mona model, the PEFT hooks and the merged deploy checkpoint,
# not transfer: `make demo` (mona_fasterrcnn_voc.py) fine-tunes a backbone
# pretrained in its step 1 instead.
_base_ = [
    '../_base_/models/oriented_rcnn_swin_fpn.py', '../_base_/datasets/dota.py',
    '../_base_/schedules/rotated_adamw_1x.py',
    '../_base_/runtimes/mmrotate.py', './_base_/tiny_swin.py',
    '../_base_/peft_hooks.py'
]
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
data_root = 'data/demo/dota/'
# The generator draws the first four DOTA classes.
metainfo = dict(
    classes=('plane', 'baseball-diamond', 'bridge', 'ground-track-field'))
img_size = 256

model = dict(
    backbone=_base_.tiny_mona_swin,
    neck=dict(in_channels=_base_.tiny_swin_widths, out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=4)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=500, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=300),
        rcnn=dict(nms_pre=500, max_per_img=100)))

train_pipeline = [
    dict(type='mmdet.LoadImageFromFile'),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(
        type='mmdet.RandomFlip',
        prob=0.75,
        direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='mmdet.PackDetInputs')
]
val_pipeline = [
    dict(type='mmdet.LoadImageFromFile'),
    dict(type='mmdet.Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(
        type='mmdet.PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        img_shape=(img_size, img_size),
        pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='test/annfiles/',
        data_prefix=dict(img_path='test/images/'),
        img_shape=(img_size, img_size),
        pipeline=val_pipeline))
test_dataloader = val_dataloader

train_cfg = _base_.iter_train_cfg
param_scheduler = _base_.detection_schedule
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = _base_.iter_default_hooks
log_processor = dict(by_epoch=False)
