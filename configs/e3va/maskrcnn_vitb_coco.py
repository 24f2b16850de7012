# E3VA: Mask R-CNN, COCO, 1x,
# ViT-B/16 (timm, ImageNet-21k -> 1k): the full fine-tuning baseline with the
# e3va_vit method base.
_base_ = [
    '../baselines/maskrcnn_vitb_coco.py',
    '../_base_/methods/e3va_vit.py'
]
model = dict(backbone=_base_.peft_backbone)
