# Houlsby adapter (Houlsby et al., ICML 2019, arXiv 1902.00751)
# on mmdet's Swin: what configs/adapter_orig/*_swinb_* task configs
# add to their full fine-tuning baseline.
# The Houlsby paper's own form; the comparison's default, the Mona paper's
# Adapter baseline as its code runs it, is adapter_swin.py.
#
# As adapter-bert defines it: a bottleneck (down 64, tanh GELU, up, with
# biases, no dropout; weights N(0, 1e-3) truncated, zero biases: a
# near-identity start) on the output of the attention and of the FFN of every
# block, inside drop-path, before the residual add (the `series` placement),
# and the backbone's LayerNorms train too (Houlsby et al., Sec. 2.1;
# adapter-bert trains its 'layer_norm' collection): PEFTFreezeHook's
# train_norms below.
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/adapter_orig_swin.py']
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
adapter_orig_pretrained = 'checkpoints/swin_base_patch4_window7_224_22k.pth'

# Merged over the baseline's backbone (depths, widths, drop path kept).
peft_backbone = dict(
    type='AdapterSwinTransformer',
    adapters=dict(
        attn=dict(series=dict(type='HoulsbyAdapter', hidden_dim=64)),
        ffn=dict(series=dict(type='HoulsbyAdapter', hidden_dim=64))),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=adapter_orig_pretrained))
# peft_hooks.py's list with this method's policy.
custom_hooks = [
    dict(type='WorkDirLockHook'),
    dict(type='PEFTFreezeHook', train_norms=True),
    dict(type='AdapterMergeHook'),
    dict(type='NaNGuardHook'),
]
