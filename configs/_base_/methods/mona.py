# Mona (Yin et al., CVPR 2025, arXiv 2408.08345) on mmdet's Swin: what every
# configs/mona/ task config adds to its full fine-tuning baseline.
#
# The baseline's Swin-B frozen and a Mona adapter after the attention residual
# and after the FFN residual of every block: 48 adapters, 3,667,456 trainable
# backbone parameters. The neck and the heads train fully, as in the official
# Mona code. No optimizer change: the baseline's optimizer and schedule (AdamW
# lr 1e-4, weight decay 0.05 for detection), so that the two runs differ only
# in what trains.
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py', '../_base_/methods/mona.py']
#   model = dict(backbone=_base_.peft_backbone)
# (mmengine refuses a key that two bases both set, and every baseline sets
# `model`: the method's backbone is a variable the task config puts in place.)
_base_ = ['../peft_hooks.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

# The official ImageNet-22k Swin-B release, read with convert_weights=True:
#   wget -P checkpoints https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window7_224_22k.pth  # noqa
mona_pretrained = 'checkpoints/swin_base_patch4_window7_224_22k.pth'

# Merged over the baseline's Swin-B backbone (depths, widths, drop path kept).
peft_backbone = dict(
    type='MonaSwinTransformer',
    adapter_cfg=dict(type='Mona', inner_dim=64, dropout=0.1),
    # Recompute the adapters in backward: same gradients, about a third less
    # training memory (docs/benchmarks.md).
    adapter_cp=True,
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=mona_pretrained))
