# Houlsby adapter (Houlsby et al., ICML 2019, arXiv 1902.00751)
# on mmdet's Swin: what every configs/adapter/*_swinb_* task config
# adds to its full fine-tuning baseline.
#
# A bottleneck adapter (down 64, GELU, up, with biases; near-identity init)
# on the output of the attention and of the FFN of every block, inside
# drop-path, before the residual add (the `series` placement): the Mona
# paper's "Adapter" baseline.
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/adapter_swin.py']
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
adapter_pretrained = 'checkpoints/swin_base_patch4_window7_224_22k.pth'

# Merged over the baseline's backbone (depths, widths, drop path kept).
peft_backbone = dict(
    type='AdapterSwinTransformer',
    adapters=dict(
        attn=dict(series=dict(type='HoulsbyAdapter', hidden_dim=64)),
        ffn=dict(series=dict(type='HoulsbyAdapter', hidden_dim=64))),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=adapter_pretrained))
