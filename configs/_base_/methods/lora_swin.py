# LoRA, the Mona paper's baseline (arXiv 2408.08345) of Hu et al. (ICLR 2022,
# arXiv 2106.09685)
# on mmdet's Swin: what every configs/lora/*_swinb_* task config
# adds to its full fine-tuning baseline.
#
# As the Mona paper's code runs it (Leiyi-Hu/mona, swin_transformer_lora.py:
# qkv = MergedLinear(C, 3C, r=64, enable_lora=[True, False, True])): in every
# block a rank-64 update of the q rows and another of the v rows of the fused
# qkv weight, k untouched, scaled by loralib's lora_alpha / r = 1/64, no
# dropout. Beside every checkpoint, AdapterMergeHook writes `*_deploy.pth`:
# the updates added into qkv, a stock backbone state dict. One update of the
# whole qkv with alpha = r: lora_orig_swin.py.
# Other linears: add proj=... (attn) or fc1=... / fc2=... (ffn) next to qkv.
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/lora_swin.py']
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
lora_pretrained = 'checkpoints/swin_base_patch4_window7_224_22k.pth'

# Merged over the baseline's backbone (depths, widths, drop path kept).
peft_backbone = dict(
    type='AdapterSwinTransformer',
    adapters=dict(
        attn=dict(qkv=dict(type='LoRA', r=64, alpha=1, dropout=0.0,
                           enable_lora=[True, False, True]))),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=lora_pretrained))
