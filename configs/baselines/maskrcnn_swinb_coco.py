# Full fine-tuning baseline: Mask R-CNN, Swin-B (ImageNet-22k), COCO, 1x.
_base_ = [
    '../_base_/models/mask_rcnn_swin_fpn.py',
    '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/det_adamw_1x.py', '../_base_/runtimes/mmdet.py'
]
