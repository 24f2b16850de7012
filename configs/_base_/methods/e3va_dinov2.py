# E3VA (Yin et al., ACM MM 2023, arXiv 2306.09729) on DINOv2 ViT-B/14
# (mmpretrain's VisionTransformer, the mmpeft `dinov2` host): what every
# configs/e3va/*_dinov2b_* task config adds to its full fine-tuning baseline.
#
# Inherits e3va_vit.py (the same highway on mmseg's ViT: adapter, hooks, no
# optimizer change), so that both ViT hosts run one method, with the host and
# DINOv2's release. Per layer one adapter reads the attention output and one
# the MLP output, each before DINOv2's layer scale (the sublayer's own
# output; the scale belongs to the backbone's residual branch:
# mmpeft/models/e3va_pretrain_vit.py), class token included; at every
# `out_indices` layer the state's patch tokens join the map the neck reads
# (the baseline's out_type='featmap') through a trainable LayerNorm.
# DINOv2-B: 339,456 adapter parameters, plus 2 x 768 per output.
#
# DINOv2's release as published, read directly (convert_weights=True):
#   wget -P checkpoints https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth  # noqa
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/e3va_dinov2.py']
#   model = dict(backbone=_base_.peft_backbone)
_base_ = ['./e3va_vit.py']

e3va_dinov2_pretrained = 'checkpoints/dinov2_vitb14_pretrain.pth'
peft_backbone = dict(
    type='E3VAPretrainViT',
    init_cfg=dict(checkpoint=e3va_dinov2_pretrained))
