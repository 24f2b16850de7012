# MiMi (Marouf et al., WACV 2024): UperNet, Swin-B (ImageNet-22k), ADE20K,
# 512x512 crops, 160k iterations, batch 16 (8 GPUs x 2): the full fine-tuning
# baseline with the MiMi method base (frozen Swin-B, 48 adapters C // 4 wide,
# pruned to compression 32 in 3 rounds).
_base_ = ['../baselines/upernet_swinb_ade20k.py', '../_base_/methods/mimi.py']

# MiMiSwin extends mmdet's SwinTransformer (it takes every argument of the
# mmseg one used by the base), whose loader reads the official Microsoft
# checkpoint through convert_weights=True rather than the mmseg-converted one.
model = dict(
    backbone=dict(
        _base_.peft_backbone,
        convert_weights=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/swin_base_patch4_window7_224_22k.pth')))

# Schedule 'within', at the baseline's cost (the official rounds would repeat
# the 160k schedule per round): one round every 16k iterations (with the
# validation / checkpoint interval), at 16k, 32k and 48k, then 112k
# iterations of fine-tuning.
custom_hooks = [
    *_base_.custom_hooks,
    dict(_base_.mimi_prune, interval=16000, by_epoch=False)
]

# The official file's download command for tools/train.py's first-run check
# (the det model bases carry it; this seg lineage does not).
download_swin_b22k = dict(
    file='checkpoints/swin_base_patch4_window7_224_22k.pth',
    command='mkdir -p checkpoints && wget -P checkpoints '
    'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window7_224_22k.pth')  # noqa
