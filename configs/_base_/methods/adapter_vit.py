# Adapter, the Mona paper's baseline (arXiv 2408.08345) of Houlsby et al.
# (ICML 2019, arXiv 1902.00751)
# on mmseg's ViT-B/16: what every configs/adapter/*_vitb_* task config
# adds to its full fine-tuning baseline.
#
# As the Mona paper's code runs it (Leiyi-Hu/mona, swin_transformer_adapter.py):
# a bottleneck (Linear C -> 64, exact GELU, dropout 0.1, Linear 64 -> C;
# trunc-normal(0.02) weights, zero biases: not the identity at init) on the
# output of the attention and of the FFN of every block, inside drop-path,
# before the residual add (the `series` placement). Houlsby's own form
# (adapter-bert: tanh GELU, no dropout, std 1e-3): adapter_orig_vit.py.
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/adapter_vit.py']
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
adapter_pretrained = 'checkpoints/jx_vit_base_p16_224-80ecf9dd.pth'

# Merged over the baseline's backbone (depths, widths, drop path kept).
peft_backbone = dict(
    type='AdapterVisionTransformer',
    adapters=dict(
        attn=dict(series=dict(type='BottleneckAdapter', hidden_dim=64,
                              scale=1.0, dropout=0.1)),
        ffn=dict(series=dict(type='BottleneckAdapter', hidden_dim=64,
                             scale=1.0, dropout=0.1))),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=adapter_pretrained))
