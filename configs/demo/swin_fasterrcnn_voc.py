# CPU transfer demo, step 2 of 2, Full: Faster R-CNN on the generated
# VOC-format set (the target domain: stars, crosses, hexagons and arrows with
# striped fills of any colour, smaller than the source domain's shapes), the
# tiny Swin initialised from step 1 (swin_fasterrcnn_coco.py, trained on the
# COCO-format shapes until its validation mAP stopped improving) and every
# weight trained; neck and heads start fresh, as after ImageNet pretraining.
# Data-limited (README "Demo protocol"): 8 training images per class
# (VOC2012 train_8shot.txt, 32 images), the rest of the VOC2012 pool as
# validation split (val.txt), VOC2007 test (64 images) as test split. The full
# fine-tuning row of the demo table (`tools/compare.py demo`), and the
# baseline every PEFT method's demo config (mona_fasterrcnn_voc.py,
# compare/*.py) adds its method to.
_base_ = [
    '../_base_/models/faster_rcnn_swin_fpn.py',
    '../_base_/datasets/voc0712.py', '../_base_/schedules/det_adamw_1x.py',
    '../_base_/runtimes/mmdet.py', './_base_/tiny_swin.py'
]
data_root = 'data/demo/VOCdevkit/'
# The generator draws the first four VOC classes.
metainfo = dict(classes=('aeroplane', 'bicycle', 'bird', 'boat'))

model = dict(
    backbone=dict(_base_.tiny_swin, init_cfg=_base_.swin_pretrained_init),
    **_base_.tiny_faster_rcnn)
train_pipeline = _base_.box_train_pipeline
test_pipeline = _base_.box_test_pipeline
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='VOCDataset',
        data_root=data_root,
        metainfo=metainfo,
        ann_file=_base_.fewshot_list,
        data_prefix=dict(sub_data_root='VOC2012/'),
        # The target domain's objects are 30-70 pixels: keep them.
        filter_cfg=dict(filter_empty_gt=True, min_size=8, bbox_min_size=8),
        pipeline=train_pipeline))
# The validation and test splits differ in their image list only.
eval_dataset = dict(
    data_root=data_root, metainfo=metainfo, pipeline=test_pipeline)
val_dataloader = dict(
    num_workers=1,
    dataset=dict(
        eval_dataset,
        ann_file='VOC2012/ImageSets/Main/val.txt',
        data_prefix=dict(sub_data_root='VOC2012/')))
test_dataloader = dict(
    num_workers=1,
    dataset=dict(
        eval_dataset,
        ann_file='VOC2007/ImageSets/Main/test.txt',
        data_prefix=dict(sub_data_root='VOC2007/')))

train_cfg = _base_.target_train_cfg
param_scheduler = _base_.target_schedule
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = _base_.target_default_hooks
log_processor = dict(by_epoch=False)
