# Partial-1, the Mona paper's baseline (arXiv 2408.08345)
# on mmseg's ViT: what every configs/partial1/*_vitb_* task config
# adds to its full fine-tuning baseline.
#
# As the Mona paper's code freezes it (Leiyi-Hu/mona,
# swin_transformer_partial_1.py trains 'layers.3.blocks.1'): the backbone's
# last block trains, without the output norm (Swin: stages.3.blocks.1; ViT:
# the last layer, ln1 frozen, its natural counterpart: ViT has no stages, and
# its last layer is the last block before the output norm); the rest stays
# frozen. The whole last stage with its output norm: partial1_orig_vit.py.
# No module is added: the host is built with adapters=dict() (its stock
# blocks, every weight frozen) and the PEFTFreezeHook policy below unfreezes
# what the method trains. Beside every checkpoint, AdapterMergeHook writes
# `*_deploy.pth` (a stock backbone state dict) and `*_adapters.pth` (what
# trained: that part of the backbone, the neck and the heads).
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/partial1_vit.py']
#   model = dict(backbone=_base_.peft_backbone)
# No optimizer change (the baseline's AdamW and schedule), so that the two
# runs differ only in what trains. Definitions: mmpeft/methods.py (POLICIES).
# No custom_imports here: the ViT detection baselines set it (a second base
# may not), and the UperNet task configs, whose baseline is stock mmseg, add
# it themselves.
_base_ = ['../peft_hooks.py']

# timm's ViT-B/16 (ImageNet-21k -> 1k) as released, read directly
# (convert_weights=True maps its keys):
#   wget -P checkpoints https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/jx_vit_base_p16_224-80ecf9dd.pth  # noqa
partial1_pretrained = 'checkpoints/jx_vit_base_p16_224-80ecf9dd.pth'

# Merged over the baseline's backbone (depths, widths, drop path kept).
peft_backbone = dict(
    type='AdapterVisionTransformer',
    adapters=dict(),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=partial1_pretrained))
# peft_hooks.py's list with this method's policy.
custom_hooks = [
    dict(type='WorkDirLockHook'),
    dict(type='PEFTFreezeHook', train_last_block=True),
    dict(type='AdapterMergeHook'),
    dict(type='NaNGuardHook'),
]
