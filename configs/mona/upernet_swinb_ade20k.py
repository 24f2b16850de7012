# Mona (Yin et al., CVPR 2025): UperNet, Swin-B (ImageNet-22k), ADE20K,
# 512x512 crops, the stock Swin UperNet 160k schedule (AdamW lr 6e-5, weight
# decay 0.01, poly), batch 16 (8 GPUs x 2): the full fine-tuning baseline with
# the Mona method base (frozen Swin-B, 48 adapters). (The official Mona
# ADE20K config raises the learning rate 5x, to 3e-4; this one keeps the
# baseline's schedule so that the two differ only in what trains.)
_base_ = ['../baselines/upernet_swinb_ade20k.py', '../_base_/methods/mona.py']
# mmseg scope: MonaSwinTransformer extends mmdet's SwinTransformer (it takes
# every argument of the mmseg one that the base sets) and is in mmengine's
# root registry, which the mmseg registry falls back to. Its loader reads the
# official ImageNet-22k release (convert_weights=True), not the
# mmseg-converted file of the baseline.
model = dict(backbone=_base_.peft_backbone)

# The official file's download command for tools/train.py's first-run check
# (the det model bases carry it; this seg lineage does not).
download_swin_b22k = dict(
    file='checkpoints/swin_base_patch4_window7_224_22k.pth',
    command='mkdir -p checkpoints && wget -P checkpoints '
    'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window7_224_22k.pth')  # noqa
