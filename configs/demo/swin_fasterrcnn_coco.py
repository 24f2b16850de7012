# CPU transfer demo, step 1 of 2 (pretraining on the source domain): Faster
# R-CNN with the stock tiny Swin on the generated COCO-format shapes
# (`python tools/make_demo_data.py` writes data/demo/: 1,024 training and 128
# validation images), every weight trained from random initialisation until
# the validation mAP stops improving (README "Demo protocol"): AdamW at a
# constant lr 1e-3 after the warm-up, validation every 250 iterations, stop
# after 4 validations without a gain of 0.005 (or at 20,000 iterations), and
# the best validated checkpoint is the source model. There is no pretrained
# tiny Swin to download, so this run makes one; `tools/compare.py demo` runs
# it once and caches the result (mmpeft/comparison/source.py). Step 2
# fine-tunes it on the VOC-format set, a visibly different target domain
# (other forms, striped fills of any colour, smaller objects), with few
# images: swin_fasterrcnn_voc.py (Full), mona_fasterrcnn_voc.py (Mona) and
# compare/*.py (the other methods).
_base_ = [
    '../_base_/models/faster_rcnn_swin_fpn.py',
    '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/det_adamw_1x.py', '../_base_/runtimes/mmdet.py',
    './_base_/tiny_swin.py'
]
data_root = 'data/demo/coco/'
# The generator draws the first four COCO categories.
metainfo = dict(classes=('person', 'bicycle', 'car', 'motorcycle'))

model = dict(backbone=_base_.tiny_swin, **_base_.tiny_faster_rcnn)
# Boxes only: the COCO set serves a detector here.
train_pipeline = _base_.box_train_pipeline
test_pipeline = _base_.box_test_pipeline
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
val_evaluator = dict(
    ann_file=data_root + 'annotations/instances_val2017.json', metric='bbox')
test_evaluator = val_evaluator

# Until the validation mAP stops improving (the cap is not meant to be hit).
source_metric = 'coco/bbox_mAP'
source_val_interval = 250
train_cfg = dict(
    _delete_=True,
    type='IterBasedTrainLoop',
    max_iters=20000,
    val_interval=source_val_interval)
param_scheduler = [_base_.warmup]  # then the optimizer's lr, constant
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = dict(
    # Validation records by iteration: the curve tools/compare.py reads.
    logger=dict(interval=50, log_metric_by_epoch=False),
    checkpoint=dict(
        by_epoch=False,
        interval=source_val_interval,
        max_keep_ckpts=1,
        save_best=source_metric,
        rule='greater'))
custom_hooks = [
    dict(
        type='EarlyStoppingHook',
        monitor=source_metric,
        rule='greater',
        min_delta=0.005,
        patience=4,
        strict=True)
]
log_processor = dict(by_epoch=False)
