# LoRand (Yin et al., CVPR 2023, "1% VS 100%")
# on mmseg's ViT-B/16: what every configs/lorand/*_vitb_* task config
# adds to its full fine-tuning baseline.
#
# As the Mona paper's baseline runs it (the authors' DongshuoYin/CoLin,
# swin_lorand.py): a bottleneck adapter (m = C/2, GELU) whose down and up
# projections are each a sum of 4 low-rank branches A_i g_i B_i with their own
# 8x8 kernels g_i, on the output of the attention and of the FFN of every
# block after their drop-path, before the residual add (the `after_drop_path`
# placement). Its init (kaiming-uniform factors) is not the identity.
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/lorand_vit.py']
#   model = dict(backbone=_base_.peft_backbone)
# (mmengine refuses a key that two bases both set, and every baseline sets
# `model`: the method's backbone is a variable the task config puts in
# place.)
# No custom_imports here: the ViT detection baselines set it (a second base
# may not), and the UperNet task configs, whose baseline is stock mmseg, add
# it themselves.
# The neck and the heads train fully; no optimizer change (the baseline's
# AdamW and schedule), so that the two runs differ only in what trains. The
# defaults and their sources: mmpeft/methods.py (COMPARISON).
_base_ = ['../peft_hooks.py']

# timm's ViT-B/16 (ImageNet-21k -> 1k) as released, read directly
# (convert_weights=True maps its keys):
#   wget -P checkpoints https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/jx_vit_base_p16_224-80ecf9dd.pth  # noqa
lorand_pretrained = 'checkpoints/jx_vit_base_p16_224-80ecf9dd.pth'

# Merged over the baseline's backbone (depths, widths, drop path kept).
peft_backbone = dict(
    type='AdapterVisionTransformer',
    adapters=dict(
        attn=dict(after_drop_path=dict(type='LoRand', factor=2,
                                       num_branch=4, kernel_dim=8)),
        ffn=dict(after_drop_path=dict(type='LoRand', factor=2, num_branch=4,
                                      kernel_dim=8))),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=lorand_pretrained))
