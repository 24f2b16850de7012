# E3VA: Mask R-CNN, COCO, 1x,
# Swin-B (ImageNet-22k): the full fine-tuning baseline with the
# e3va_swin method base.
_base_ = [
    '../baselines/maskrcnn_swinb_coco.py',
    '../_base_/methods/e3va_swin.py'
]
model = dict(backbone=_base_.peft_backbone)
