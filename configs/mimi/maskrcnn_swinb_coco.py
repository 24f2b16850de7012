# MiMi (Marouf et al., WACV 2024): Mask R-CNN, Swin-B (ImageNet-22k), COCO, 1x:
# the full fine-tuning baseline with the MiMi method base (frozen Swin-B, 48
# adapters C // 4 wide, pruned to compression 32 in 3 rounds).
_base_ = ['../baselines/maskrcnn_swinb_coco.py', '../_base_/methods/mimi.py']
model = dict(backbone=_base_.peft_backbone)

# Schedule 'within': the official rounds (a full 12-epoch schedule each) would
# make the run 3-4x the baseline's and the other methods' cost; instead one
# round after epochs 2, 4 and 6 of 12, and six epochs of fine-tuning follow
# the last round (lr steps at epochs 8 and 11).
custom_hooks = [
    *_base_.custom_hooks,
    dict(_base_.mimi_prune, interval=2, by_epoch=True)
]
