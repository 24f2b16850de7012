# E3VA (Yin et al., ACM MM 2023, arXiv 2306.09729) on mmseg's ViT-B/16: what
# every configs/e3va/*_vitb_* task config adds to its full fine-tuning
# baseline.
#
# The baseline's ViT frozen and run without an autograd graph, and beside it
# the trainable highway of configs/_base_/methods/e3va_swin.py (the sources
# of every choice are there and in mmpeft/adapters/e3va.py). The paper builds
# E3VA on Swin; on a plain ViT the highway has nothing to downsample: per
# layer one adapter reads the attention output and one the MLP output (class
# token included), and at every `out_indices` layer the state joins the map
# the neck reads through a trainable LayerNorm (starting at scale 0). ViT-B:
# 12 layers x 2 adapters of 2k(C + m) + m + C = 14,144 parameters (C = 768,
# m = 64, k = 8), plus 2 x 768 per output.
#
# Nothing merges (a side network): `*_deploy.pth` keeps the highway and
# `*_adapters.pth` holds the highway, the neck and the heads.
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py', '../_base_/methods/e3va_vit.py']
#   model = dict(backbone=_base_.peft_backbone)
# No custom_imports here: the ViT detection baselines set it (a second base
# may not), and the UperNet task configs, whose baseline is stock mmseg, add
# it themselves. No optimizer change (the baseline's AdamW and schedule).
_base_ = ['../peft_hooks.py']

# timm's ViT-B/16 (ImageNet-21k -> 1k) as released, read directly
# (convert_weights=True maps its keys):
#   wget -P checkpoints https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/jx_vit_base_p16_224-80ecf9dd.pth  # noqa
e3va_pretrained = 'checkpoints/jx_vit_base_p16_224-80ecf9dd.pth'

# Merged over the baseline's backbone (depths, widths, drop path kept).
peft_backbone = dict(
    type='E3VAViT',
    adapter_cfg=dict(type='E3VAAdapter', hidden_dim=64, rank=8),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=e3va_pretrained))
