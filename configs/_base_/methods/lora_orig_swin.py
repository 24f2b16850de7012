# LoRA (Hu et al., ICLR 2022, arXiv 2106.09685)
# on mmdet's Swin: what configs/lora_orig/*_swinb_* task configs
# add to their full fine-tuning baseline.
# LoRA on the whole fused qkv with alpha = r; the comparison's default, the
# Mona paper's LoRA baseline as its code runs it, is lora_swin.py.
#
# A rank-64 update (scale alpha / r = 1) of the attention's fused qkv weight
# in every block. Beside every checkpoint, AdapterMergeHook writes
# `*_deploy.pth`: the updates added into qkv, a stock backbone state dict.
# Other linears: add proj=... (attn) or fc1=... / fc2=... (ffn) next to qkv.
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/lora_orig_swin.py']
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
lora_orig_pretrained = 'checkpoints/swin_base_patch4_window7_224_22k.pth'

# Merged over the baseline's backbone (depths, widths, drop path kept).
peft_backbone = dict(
    type='AdapterSwinTransformer',
    adapters=dict(
        attn=dict(qkv=dict(type='LoRA', r=64, alpha=64, dropout=0.0))),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=lora_orig_pretrained))
