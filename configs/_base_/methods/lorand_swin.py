# LoRand (Yin et al., CVPR 2023, "1% VS 100%")
# on mmdet's Swin: what every configs/lorand/*_swinb_* task config
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
#             '../_base_/methods/lorand_swin.py']
#   model = dict(backbone=_base_.peft_backbone)
# (mmengine refuses a key that two bases both set, and every baseline sets
# `model`: the method's backbone is a variable the task config puts in
# place.)
# The neck and the heads train fully; no optimizer change (the baseline's
# AdamW and schedule), so that the two runs differ only in what trains. The
# defaults and their sources: mmpeft/methods.py (COMPARISON).
_base_ = ['../peft_hooks.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

# The official ImageNet-22k Swin-B release, read with convert_weights=True:
#   wget -P checkpoints https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window7_224_22k.pth  # noqa
lorand_pretrained = 'checkpoints/swin_base_patch4_window7_224_22k.pth'

# Merged over the baseline's backbone (depths, widths, drop path kept).
peft_backbone = dict(
    type='AdapterSwinTransformer',
    adapters=dict(
        attn=dict(after_drop_path=dict(type='LoRand', factor=2,
                                       num_branch=4, kernel_dim=8)),
        ffn=dict(after_drop_path=dict(type='LoRand', factor=2, num_branch=4,
                                      kernel_dim=8))),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=lorand_pretrained))
