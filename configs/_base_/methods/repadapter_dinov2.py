# RepAdapter (Luo et al., arXiv 2302.08106) on DINOv2 ViT-B/14 (mmpretrain's
# VisionTransformer, the mmpeft `dinov2` host): what every
# configs/repadapter/*_dinov2b_* task config adds to its full fine-tuning
# baseline.
#
# repadapter.py's adapter (inherited, so that both ViT hosts run one method)
# before the attention and before the FFN of every layer (`pre`); beside
# every checkpoint, AdapterMergeHook writes `*_deploy.pth`: the adapters
# folded into qkv and the first FFN linear (fc1; w12 in a SwiGLU FFN), a
# stock mmpretrain VisionTransformer state dict.
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/repadapter_dinov2.py']
#   model = dict(backbone=_base_.peft_backbone)
_base_ = ['./repadapter.py']

# DINOv2's release as published, read directly (convert_weights=True):
#   wget -P checkpoints https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth  # noqa
repadapter_dinov2_pretrained = 'checkpoints/dinov2_vitb14_pretrain.pth'

peft_backbone = dict(
    _delete_=True,
    type='AdapterPretrainViT',
    adapters=dict(
        attn=dict(pre=_base_.peft_backbone.adapter_cfg),
        ffn=dict(pre=_base_.peft_backbone.adapter_cfg)),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=repadapter_dinov2_pretrained))
