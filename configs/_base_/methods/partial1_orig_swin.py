# Partial-1
# on mmdet's Swin: what configs/partial1_orig/*_swinb_* task configs
# add to their full fine-tuning baseline.
# The whole last stage; the comparison's default, the Mona paper's Partial-1
# baseline as its code runs it (the last block), is partial1_swin.py.
#
# The backbone's last stage trains with the norm of its output (Swin:
# stages.3 + norm3; ViT: the last layer + ln1); the rest stays frozen.
# No module is added: the host is built with adapters=dict() (its stock
# blocks, every weight frozen) and the PEFTFreezeHook policy below unfreezes
# what the method trains. Beside every checkpoint, AdapterMergeHook writes
# `*_deploy.pth` (a stock backbone state dict) and `*_adapters.pth` (what
# trained: that part of the backbone, the neck and the heads).
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/partial1_orig_swin.py']
#   model = dict(backbone=_base_.peft_backbone)
# No optimizer change (the baseline's AdamW and schedule), so that the two
# runs differ only in what trains. Definitions: mmpeft/methods.py (POLICIES).
_base_ = ['../peft_hooks.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

# The official ImageNet-22k Swin-B release, read with convert_weights=True:
#   wget -P checkpoints https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window7_224_22k.pth  # noqa
partial1_orig_pretrained = 'checkpoints/swin_base_patch4_window7_224_22k.pth'

# Merged over the baseline's backbone (depths, widths, drop path kept).
peft_backbone = dict(
    type='AdapterSwinTransformer',
    adapters=dict(),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=partial1_orig_pretrained))
# peft_hooks.py's list with this method's policy.
custom_hooks = [
    dict(type='WorkDirLockHook'),
    dict(type='PEFTFreezeHook', train_last_stage=True),
    dict(type='AdapterMergeHook'),
    dict(type='NaNGuardHook'),
]
