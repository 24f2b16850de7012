# E3VA: Faster R-CNN, Pascal VOC 07+12,
# ViT-B/16 (timm, ImageNet-21k -> 1k): the full fine-tuning baseline with the
# e3va_vit method base.
_base_ = [
    '../baselines/fasterrcnn_vitb_voc.py',
    '../_base_/methods/e3va_vit.py'
]
model = dict(backbone=_base_.peft_backbone)
