# E3VA (Yin et al., ACM MM 2023, arXiv 2306.09729) on DINOv2 ViT-B/14
# (mmpretrain's VisionTransformer, the mmpeft `dinov2` host): what every
# configs/e3va/*_dinov2b_* task config adds to its full fine-tuning baseline.
#
# The baseline's DINOv2-B frozen and run without an autograd graph, and
# beside it the trainable highway of configs/_base_/methods/e3va_swin.py
# (the sources of every choice are there and in mmpeft/adapters/e3va.py).
# As on mmseg's ViT the highway has nothing to downsample: per layer one
# adapter reads the attention output and one the MLP output, each before
# DINOv2's layer scale (the sublayer's own output; the scale belongs to the
# backbone's residual branch: mmpeft/models/e3va_pretrain_vit.py), class
# token included; at every `out_indices` layer the state's patch tokens join
# the map the neck reads through a trainable LayerNorm (starting at scale 0).
# ViT-B: 12 layers x 2 adapters of 2k(C + m) + m + C = 14,144 parameters
# (C = 768, m = 64, k = 8), plus 2 x 768 per output.
#
# Nothing merges (a side network): `*_deploy.pth` keeps the highway and
# `*_adapters.pth` holds the highway, the neck and the heads.
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/e3va_dinov2.py']
#   model = dict(backbone=_base_.peft_backbone)
# No custom_imports here: the detection baseline sets it (a second base may
# not), and the UperNet task configs, whose baseline is stock mmseg, add it.
# No optimizer change (the baseline's AdamW and schedule).
_base_ = ['../peft_hooks.py']

# DINOv2's release as published, read directly (convert_weights=True):
#   wget -P checkpoints https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth  # noqa
e3va_dinov2_pretrained = 'checkpoints/dinov2_vitb14_pretrain.pth'

# Merged over the baseline's backbone (arch, patch size, layer scale,
# out_type='featmap' kept).
peft_backbone = dict(
    type='E3VAPretrainViT',
    adapter_cfg=dict(type='E3VAAdapter', hidden_dim=64, rank=8),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=e3va_dinov2_pretrained))
