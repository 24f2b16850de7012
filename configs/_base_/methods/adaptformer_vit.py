# AdaptFormer, the Mona paper's baseline (arXiv 2408.08345) of Chen et al.
# (NeurIPS 2022, arXiv 2205.13535)
# on mmseg's ViT-B/16: what every configs/adaptformer/*_vitb_* task config
# adds to its full fine-tuning baseline.
#
# As the Mona paper's code runs it (Leiyi-Hu/mona,
# swin_transformer_adaptformer.py): a bottleneck branch (Linear C -> 64, exact
# GELU, dropout 0.1, Linear 64 -> C; both trunc-normal(0.02), zero biases: not
# zero at init) parallel to the FFN of every block, scaled by 0.1 and added
# beside it (the `parallel` placement: it reads the FFN input before norm2 and
# adds outside drop-path). The official AdaptFormer form (ReLU, zero-init up):
# adaptformer_orig_vit.py.
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/adaptformer_vit.py']
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
adaptformer_pretrained = 'checkpoints/jx_vit_base_p16_224-80ecf9dd.pth'

# Merged over the baseline's backbone (depths, widths, drop path kept).
peft_backbone = dict(
    type='AdapterVisionTransformer',
    adapters=dict(ffn=dict(parallel=dict(
        type='BottleneckAdapter', hidden_dim=64, scale=0.1, dropout=0.1))),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=adaptformer_pretrained))
