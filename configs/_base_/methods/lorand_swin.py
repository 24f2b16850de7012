# LoRand (Yin et al., CVPR 2023, "1% VS 100%")
# on mmdet's Swin: what every configs/lorand/*_swinb_* task config
# adds to its full fine-tuning baseline.
#
# A bottleneck adapter whose down / up projections are sums of 2 low-rank
# products sharing an 8x8 kernel per branch (bottleneck 64, GELU), on the
# output of the attention and of the FFN of every block, before the residual
# add (`series`). No official code was found; see mmpeft/adapters/lorand.py
# for where the maths and init come from. Its init is not the identity.
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
        attn=dict(series=dict(type='LoRand', hidden_dim=64, num_branch=2,
                              kernel_dim=8)),
        ffn=dict(series=dict(type='LoRand', hidden_dim=64, num_branch=2,
                             kernel_dim=8))),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=lorand_pretrained))
