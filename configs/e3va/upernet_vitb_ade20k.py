# E3VA: UperNet, ADE20K, 512x512 crops, 160k iterations,
# ViT-B/16 (timm, ImageNet-21k -> 1k): the full fine-tuning baseline with the
# e3va_vit method base.
_base_ = [
    '../baselines/upernet_vitb_ade20k.py',
    '../_base_/methods/e3va_vit.py'
]
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
model = dict(backbone=_base_.peft_backbone)
