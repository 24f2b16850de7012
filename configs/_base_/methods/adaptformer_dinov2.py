# AdaptFormer (Chen et al., NeurIPS 2022, arXiv 2205.13535)
# on DINOv2 ViT-B/14 (mmpretrain's VisionTransformer, the mmpeft `dinov2`
# host): what every configs/adaptformer/*_dinov2b_* task config adds to its full
# fine-tuning baseline.
#
# Inherits adaptformer_vit.py (the same method on mmseg's ViT: its adapters or
# its PEFTFreezeHook policy), so that both ViT hosts run one method, with
# the host and DINOv2's release, read directly (convert_weights=True maps
# its keys):
#   wget -P checkpoints https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth  # noqa
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py',
#             '../_base_/methods/adaptformer_dinov2.py']
#   model = dict(backbone=_base_.peft_backbone)
_base_ = ['./adaptformer_vit.py']

adaptformer_dinov2_pretrained = 'checkpoints/dinov2_vitb14_pretrain.pth'
peft_backbone = dict(
    type='AdapterPretrainViT',
    init_cfg=dict(checkpoint=adaptformer_dinov2_pretrained))
