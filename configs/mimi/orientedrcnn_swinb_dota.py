# MiMi (Marouf et al., WACV 2024): Oriented R-CNN (le90), Swin-B
# (ImageNet-22k), DOTA-v1.0 single-scale 1024x1024 patches, 1x: the full
# fine-tuning baseline with the MiMi method base (frozen Swin-B, 48 adapters
# C // 4 wide, pruned to compression 32 in 3 rounds).
_base_ = [
    '../baselines/orientedrcnn_swinb_dota.py', '../_base_/methods/mimi.py'
]
# mmrotate scope: the backbone is registered in mmengine's root registry,
# which the mmrotate and mmdet registries fall back to (no prefix needed).
model = dict(backbone=_base_.peft_backbone)

# Schedule 'within', at the baseline's cost (the official rounds would repeat
# the 12-epoch schedule per round): one round after epochs 2, 4 and 6 of 12,
# then six epochs of fine-tuning.
custom_hooks = [
    *_base_.custom_hooks,
    dict(_base_.mimi_prune, interval=2, by_epoch=True)
]
