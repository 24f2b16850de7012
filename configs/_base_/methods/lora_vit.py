# LoRA, the Mona paper's baseline (arXiv 2408.08345) of Hu et al. (ICLR 2022,
# arXiv 2106.09685)
# on mmseg's ViT-B/16: what every configs/lora/*_vitb_* task config
# adds to its full fine-tuning baseline.
#
# As the Mona paper's code runs it (Leiyi-Hu/mona, swin_transformer_lora.py:
# qkv = MergedLinear(C, 3C, r=64, enable_lora=[True, False, True])): in every
# block a rank-64 update of the q rows and another of the v rows of the fused
# qkv weight, k untouched, scaled by loralib's lora_alpha / r = 1/64, no
# dropout. Beside every checkpoint, AdapterMergeHook writes `*_deploy.pth`:
# the updates added into qkv, a stock backbone state dict. One update of the
# whole qkv with alpha = r: lora_orig_vit.py.
# Other linears: add proj=... (attn) or fc1=... / fc2=... (ffn) next to qkv.
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/lora_vit.py']
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
lora_pretrained = 'checkpoints/jx_vit_base_p16_224-80ecf9dd.pth'

# Merged over the baseline's backbone (depths, widths, drop path kept).
peft_backbone = dict(
    type='AdapterVisionTransformer',
    adapters=dict(
        attn=dict(qkv=dict(type='LoRA', r=64, alpha=1, dropout=0.0,
                           enable_lora=[True, False, True]))),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=lora_pretrained))
