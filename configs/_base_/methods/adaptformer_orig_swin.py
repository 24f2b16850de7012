# AdaptFormer (Chen et al., NeurIPS 2022, arXiv 2205.13535)
# on mmdet's Swin: what configs/adaptformer_orig/*_swinb_* task configs
# add to their full fine-tuning baseline.
# The official AdaptFormer form; the comparison's default, the Mona paper's
# AdaptFormer baseline as its code runs it, is adaptformer_swin.py.
#
# A bottleneck branch (down 64, ReLU, dropout 0.1, up; zero-init up) parallel
# to the FFN of every block, scaled by 0.1 and added to the FFN output (the
# `parallel` placement, reading the sublayer input before its norm as the
# official code does).
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/adaptformer_orig_swin.py']
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
adaptformer_orig_pretrained = 'checkpoints/swin_base_patch4_window7_224_22k.pth'

# Merged over the baseline's backbone (depths, widths, drop path kept).
peft_backbone = dict(
    type='AdapterSwinTransformer',
    adapters=dict(ffn=dict(parallel=dict(
        type='AdaptFormer', hidden_dim=64, scale=0.1, layernorm='none',
        dropout=0.1))),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=adaptformer_orig_pretrained))
