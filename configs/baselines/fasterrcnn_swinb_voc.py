# Full fine-tuning baseline: Faster R-CNN, Swin-B (ImageNet-22k), Pascal VOC
# 07+12. As in mmdet's faster-rcnn_r50_fpn_1x_voc0712.py the dataset is
# repeated 3 times per epoch, so the "1x" schedule is 4 epochs, decay at 3.
_base_ = [
    '../_base_/models/faster_rcnn_swin_fpn.py',
    '../_base_/datasets/voc0712.py', '../_base_/schedules/det_adamw_1x.py',
    '../_base_/runtimes/mmdet.py'
]
model = dict(roi_head=dict(bbox_head=dict(num_classes=20)))

max_epochs = 4
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[3],
        gamma=0.1)
]
