# E3VA: Oriented R-CNN (le90), DOTA-v1.0, 1x,
# ViT-B/16 (timm, ImageNet-21k -> 1k): the full fine-tuning baseline with the
# e3va_vit method base.
_base_ = [
    '../baselines/orientedrcnn_vitb_dota.py',
    '../_base_/methods/e3va_vit.py'
]
model = dict(backbone=_base_.peft_backbone)
