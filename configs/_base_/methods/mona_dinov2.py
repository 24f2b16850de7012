# Mona (Yin et al., CVPR 2025, arXiv 2408.08345) on DINOv2 ViT-B/14
# (mmpretrain's VisionTransformer, the mmpeft `dinov2` host): what every
# configs/mona/*_dinov2b_* task config adds to its full fine-tuning baseline.
#
# The baseline's DINOv2-B frozen and a Mona adapter (inner width 64) after
# the attention residual and after the FFN residual of every layer, as
# MonaSwinTransformer places them in Swin blocks: 24 adapters. Mona's
# multi-scale depthwise convs read the 37x37 (for 512 crops) patch map; the
# class token passes them unchanged (mmpeft/models/pretrain_vit.py, "Tokens").
# The neck and the heads train fully; no optimizer change (the baseline's
# AdamW and schedule), so that the two runs differ only in what trains.
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/mona_dinov2.py']
#   model = dict(backbone=_base_.peft_backbone)
# No custom_imports here: the detection baseline sets it (a second base may
# not), and the UperNet task configs, whose baseline is stock mmseg, add it.
_base_ = ['../peft_hooks.py']

# DINOv2's release as published, read directly (convert_weights=True):
#   wget -P checkpoints https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth  # noqa
mona_dinov2_pretrained = 'checkpoints/dinov2_vitb14_pretrain.pth'

# Merged over the baseline's backbone (arch, patch size, layer scale kept).
peft_backbone = dict(
    type='AdapterPretrainViT',
    adapters=dict(
        attn=dict(post=dict(type='Mona', inner_dim=64, dropout=0.1)),
        ffn=dict(post=dict(type='Mona', inner_dim=64, dropout=0.1))),
    # Recompute the adapters in backward: same gradients, less memory.
    adapter_cp=True,
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=mona_dinov2_pretrained))
