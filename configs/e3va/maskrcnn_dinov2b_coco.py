# E3VA: Mask R-CNN, COCO, 1x,
# DINOv2 ViT-B/14 (LVD-142M): the full fine-tuning baseline with the
# e3va_dinov2 method base.
_base_ = [
    '../baselines/maskrcnn_dinov2b_coco.py',
    '../_base_/methods/e3va_dinov2.py'
]
model = dict(backbone=_base_.peft_backbone)
