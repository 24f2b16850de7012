# E3VA: UperNet, ADE20K, 512x512 crops, 160k iterations,
# DINOv2 ViT-B/14 (LVD-142M): the full fine-tuning baseline with the
# e3va_dinov2 method base.
_base_ = [
    '../baselines/upernet_dinov2b_ade20k.py',
    '../_base_/methods/e3va_dinov2.py'
]
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
model = dict(backbone=_base_.peft_backbone)
