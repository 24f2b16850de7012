# CPU demo: Mask R-CNN with a tiny Mona Swin on the generated COCO-format
# data (`python tools/make_demo_data.py` writes data/demo/).
# The backbone is MonaSwinTransformer, frozen except its adapters; there is
# no pretrained tiny Swin, so its frozen weights are random (it warns). The
# run shows the Mona model, the PEFT hooks and the merged deploy checkpoint,
# not transfer: `make demo` (mona_fasterrcnn_voc.py) fine-tunes a backbone
# pretrained in its step 1 instead.
_base_ = [
    '../_base_/models/mask_rcnn_swin_fpn.py',
    '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/det_adamw_1x.py', '../_base_/runtimes/mmdet.py',
    './_base_/tiny_swin.py', '../_base_/peft_hooks.py'
]
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
data_root = 'data/demo/coco/'
# The generator draws the first four COCO categories.
metainfo = dict(classes=('person', 'bicycle', 'car', 'motorcycle'))
img_scale = (256, 192)

model = dict(
    backbone=_base_.tiny_mona_swin,
    neck=dict(in_channels=_base_.tiny_swin_widths, out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=4),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(
            num_convs=2, in_channels=64, conv_out_channels=64,
            num_classes=4)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=500, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

train_cfg = _base_.iter_train_cfg
param_scheduler = _base_.detection_schedule
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = _base_.iter_default_hooks
log_processor = dict(by_epoch=False)
