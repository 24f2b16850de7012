# Full fine-tuning baseline: Oriented R-CNN (le90), Swin-B (ImageNet-22k),
# DOTA-v1.0 single-scale 1024x1024 patches, 1x.
_base_ = [
    '../_base_/models/oriented_rcnn_swin_fpn.py', '../_base_/datasets/dota.py',
    '../_base_/schedules/rotated_adamw_1x.py', '../_base_/runtimes/mmrotate.py'
]
