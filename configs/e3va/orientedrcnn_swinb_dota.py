# E3VA: Oriented R-CNN (le90), DOTA-v1.0, 1x,
# Swin-B (ImageNet-22k): the full fine-tuning baseline with the
# e3va_swin method base.
_base_ = [
    '../baselines/orientedrcnn_swinb_dota.py',
    '../_base_/methods/e3va_swin.py'
]
model = dict(backbone=_base_.peft_backbone)
