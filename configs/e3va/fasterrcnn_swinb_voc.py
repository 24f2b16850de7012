# E3VA: Faster R-CNN, Pascal VOC 07+12,
# Swin-B (ImageNet-22k): the full fine-tuning baseline with the
# e3va_swin method base.
_base_ = [
    '../baselines/fasterrcnn_swinb_voc.py',
    '../_base_/methods/e3va_swin.py'
]
model = dict(backbone=_base_.peft_backbone)
