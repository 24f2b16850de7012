# Mona (Yin et al., CVPR 2025): Oriented R-CNN (le90), Swin-B (ImageNet-22k),
# DOTA-v1.0 single-scale 1024x1024 patches, 1x: the full fine-tuning baseline
# with the Mona method base (frozen Swin-B, 48 adapters).
_base_ = [
    '../baselines/orientedrcnn_swinb_dota.py', '../_base_/methods/mona.py'
]
# mmrotate scope: MonaSwinTransformer is in mmengine's root registry, which
# the mmrotate and mmdet registries fall back to (no scope prefix).
model = dict(backbone=_base_.peft_backbone)
