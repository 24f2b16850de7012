# CPU transfer demo, step 1 of 2 ("pretraining" on the source domain): Faster
# R-CNN with the stock tiny Swin on the generated COCO-format shapes
# (`python tools/make_demo_data.py` writes data/demo/), every weight trained
# from random initialisation. There is no pretrained tiny Swin to download, so
# this run makes one; step 2 fine-tunes it on the VOC-format set, a visibly
# different target domain (other forms, striped fills of any colour, smaller
# objects): swin_fasterrcnn_voc.py (Full), mona_fasterrcnn_voc.py (Mona) and
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

train_cfg = _base_.iter_train_cfg
param_scheduler = _base_.detection_schedule
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = _base_.iter_default_hooks
log_processor = dict(by_epoch=False)
