# Mona (Yin et al., CVPR 2025): Oriented R-CNN (le90), Swin-B (ImageNet-22k),
# DOTA-v1.0 single-scale 1024x1024 patches, 1x.
#
# The full fine-tuning baseline of the same name (model, data, AdamW lr 1e-4
# weight decay 0.05, schedule) with its Swin-B frozen and a Mona adapter after
# the attention residual and after the FFN residual of every block: 48
# adapters, 3,667,456 trainable backbone parameters. The neck and the heads
# train fully, as in the official Mona code.
_base_ = ['../baselines/orientedrcnn_swinb_dota.py', '../_base_/peft_hooks.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

# The official ImageNet-22k Swin-B release, read with convert_weights=True:
#   wget -P checkpoints https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window7_224_22k.pth  # noqa
pretrained = 'checkpoints/swin_base_patch4_window7_224_22k.pth'

# mmrotate scope: MonaSwinTransformer is in mmengine's root registry, which
# the mmrotate and mmdet registries fall back to (no scope prefix).
model = dict(
    backbone=dict(
        type='MonaSwinTransformer',
        adapter_cfg=dict(type='Mona', inner_dim=64, dropout=0.1),
        # Recompute the adapters in backward: same gradients, about a third less
        # training memory (docs/benchmarks.md).
        adapter_cp=True,
        convert_weights=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
