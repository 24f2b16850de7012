# Partial-1, the Mona paper's baseline (arXiv 2408.08345)
# on mmdet's Swin: what every configs/partial1/*_swinb_* task config
# adds to its full fine-tuning baseline.
#
# As the Mona paper's code freezes it (Leiyi-Hu/mona,
# swin_transformer_partial_1.py trains 'layers.3.blocks.1'): the backbone's
# last block trains, without the output norm (Swin: stages.3.blocks.1; ViT:
# the last layer, ln1 frozen, its natural counterpart: ViT has no stages, and
# its last layer is the last block before the output norm); the rest stays
# frozen. The whole last stage with its output norm: partial1_orig_swin.py.
# No module is added: the host is built with adapters=dict() (its stock
# blocks, every weight frozen) and the PEFTFreezeHook policy below unfreezes
# what the method trains. Beside every checkpoint, AdapterMergeHook writes
# `*_deploy.pth` (a stock backbone state dict) and `*_adapters.pth` (what
# trained: that part of the backbone, the neck and the heads).
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/partial1_swin.py']
#   model = dict(backbone=_base_.peft_backbone)
# No optimizer change (the baseline's AdamW and schedule), so that the two
# runs differ only in what trains. Definitions: mmpeft/methods.py (POLICIES).
_base_ = ['../peft_hooks.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

# The official ImageNet-22k Swin-B release, read with convert_weights=True:
#   wget -P checkpoints https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window7_224_22k.pth  # noqa
partial1_pretrained = 'checkpoints/swin_base_patch4_window7_224_22k.pth'

# Merged over the baseline's backbone (depths, widths, drop path kept).
peft_backbone = dict(
    type='AdapterSwinTransformer',
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
