# RepAdapter (Luo et al., arXiv 2302.08106) on mmseg's ViT-B/16: what every
# configs/repadapter/ task config adds to its full fine-tuning baseline.
#
# The baseline's ViT frozen and a RepAdapter before the attention and before
# the FFN of every layer; the neck and the heads train as in the baseline. No
# optimizer change. Beside every checkpoint, AdapterMergeHook writes
# `*_deploy.pth`: the adapters folded into qkv / fc1
# (`mmpeft.merge_adapters`), a stock ViT-B, loadable by the baseline config.
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py', '../_base_/methods/repadapter.py']
#   model = dict(backbone=_base_.peft_backbone)
# (mmengine refuses a key that two bases both set: `model` is the baseline's,
# and so is `custom_imports` -- the ViT baselines import mmpeft already.)
_base_ = ['../peft_hooks.py']

# timm's ViT-B/16 (ImageNet-21k -> 1k) as released, read directly
# (convert_weights=True maps its keys):
#   wget -P checkpoints https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/jx_vit_base_p16_224-80ecf9dd.pth  # noqa
repadapter_pretrained = 'checkpoints/jx_vit_base_p16_224-80ecf9dd.pth'

# RepAdapter's scale s: out = x + s * B(dropout(A(x))). The paper searches it
# per task (the official search script tries 0.1, 0.5, 1, 5, 10); 1 is the
# default.
repadapter_scale = 1.0

peft_backbone = dict(
    type='RepAdapterViT',
    adapter_cfg=dict(
        type='RepAdapter',
        hidden_dim=8,  # bottleneck width r
        groups=2,  # groups of the up-projection B
        scale=repadapter_scale,
        dropout=0.1),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=repadapter_pretrained))
