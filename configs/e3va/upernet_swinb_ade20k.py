# E3VA: UperNet, ADE20K, 512x512 crops, 160k iterations,
# Swin-B (ImageNet-22k): the full fine-tuning baseline with the
# e3va_swin method base.
_base_ = [
    '../baselines/upernet_swinb_ade20k.py',
    '../_base_/methods/e3va_swin.py'
]
model = dict(backbone=_base_.peft_backbone)
