# Adapter, the Mona paper's baseline (arXiv 2408.08345) of Houlsby et al.
# (ICML 2019, arXiv 1902.00751)
# on mmdet's Swin: what every configs/adapter/*_swinb_* task config
# adds to its full fine-tuning baseline.
#
# As the Mona paper's code runs it (Leiyi-Hu/mona, swin_transformer_adapter.py):
# a bottleneck (Linear C -> 64, exact GELU, dropout 0.1, Linear 64 -> C;
# trunc-normal(0.02) weights, zero biases: not the identity at init) on the
# output of the attention and of the FFN of every block, inside drop-path,
# before the residual add (the `series` placement). Houlsby's own form
# (adapter-bert: tanh GELU, no dropout, std 1e-3): adapter_orig_swin.py.
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
        attn=dict(series=dict(type='BottleneckAdapter', hidden_dim=64,
                              scale=1.0, dropout=0.1)),
        ffn=dict(series=dict(type='BottleneckAdapter', hidden_dim=64,
                             scale=1.0, dropout=0.1))),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=adapter_pretrained))
