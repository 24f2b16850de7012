# BitFit, the Mona paper's baseline (arXiv 2408.08345) of Zaken et al.
# (ACL 2022, arXiv 2106.10199)
# on mmdet's Swin: what every configs/bitfit/*_swinb_* task config
# adds to its full fine-tuning baseline.
#
# As the Mona paper's code freezes it (Leiyi-Hu/mona, swin_transformer_bitfit.py):
# every backbone parameter whose name holds 'bias' trains: every bias vector
# (linear, norm and patch-embedding biases, nn.MultiheadAttention's
# in_proj_bias) and Swin's relative-position bias tables (ViT has none).
# BitFit's own form, bias vectors only: bitfit_orig_swin.py.
# No module is added: the host is built with adapters=dict() (its stock
# blocks, every weight frozen) and the PEFTFreezeHook policy below unfreezes
# what the method trains. Beside every checkpoint, AdapterMergeHook writes
# `*_deploy.pth` (a stock backbone state dict) and `*_adapters.pth` (what
# trained: that part of the backbone, the neck and the heads).
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/bitfit_swin.py']
#   model = dict(backbone=_base_.peft_backbone)
# No optimizer change (the baseline's AdamW and schedule), so that the two
# runs differ only in what trains. Definitions: mmpeft/methods.py (POLICIES).
_base_ = ['../peft_hooks.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

# The official ImageNet-22k Swin-B release, read with convert_weights=True:
#   wget -P checkpoints https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window7_224_22k.pth  # noqa
bitfit_pretrained = 'checkpoints/swin_base_patch4_window7_224_22k.pth'

# Merged over the baseline's backbone (depths, widths, drop path kept).
peft_backbone = dict(
    type='AdapterSwinTransformer',
    adapters=dict(),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=bitfit_pretrained))
# peft_hooks.py's list with this method's policy.
custom_hooks = [
    dict(type='WorkDirLockHook'),
    dict(type='PEFTFreezeHook', train_biases=True, train_bias_tables=True),
    dict(type='AdapterMergeHook'),
    dict(type='NaNGuardHook'),
]
