# CPU transfer demo, step 2 of 2, Full: Faster R-CNN on the generated
# VOC-format set (the target domain: stars, crosses, hexagons and arrows with
# striped fills of any colour, smaller than the source domain's shapes), the
# tiny Swin initialised from step 1 (swin_fasterrcnn_coco.py, trained on the
# COCO-format shapes) and every weight trained; neck and heads start fresh,
# as after ImageNet pretraining. The full fine-tuning row of the demo table
# (`tools/compare.py demo`), and the baseline every PEFT method's demo config
# (mona_fasterrcnn_voc.py, compare/*.py) adds its method to.
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
        type='ConcatDataset',
        ignore_keys=['dataset_type'],
        datasets=[
            dict(
                type='VOCDataset',
                data_root=data_root,
                metainfo=metainfo,
                ann_file=f'VOC{year}/ImageSets/Main/trainval.txt',
                data_prefix=dict(sub_data_root=f'VOC{year}/'),
                # The target domain's objects are 30-70 pixels: keep them.
                filter_cfg=dict(
                    filter_empty_gt=True, min_size=8, bbox_min_size=8),
                pipeline=train_pipeline) for year in (2007, 2012)
        ]))
val_dataloader = dict(
    num_workers=1,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = _base_.iter_train_cfg
param_scheduler = _base_.detection_schedule
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = _base_.iter_default_hooks
log_processor = dict(by_epoch=False)
