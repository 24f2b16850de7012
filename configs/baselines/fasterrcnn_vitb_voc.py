# Full fine-tuning baseline: Faster R-CNN, ViT-B/16 (timm, ImageNet-21k ->
# 1k), Pascal VOC 07+12: the Swin-B baseline with the backbone swapped for a
# plain ViT and ViTDet's simple feature pyramid in front of the FPN. The
# backbone is mmseg's VisionTransformer, reached from the mmdet scope as
# `mmseg.VisionTransformer`; the pyramid neck comes from mmpeft.
#
# mmseg's stock VisionTransformer reads checkpoints in its own key layout;
# convert timm's release once (mmpeft's RepAdapterViT reads the original):
#   wget -P checkpoints https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/jx_vit_base_p16_224-80ecf9dd.pth  # noqa
#   python tools/convert_timm_vit.py \
#       checkpoints/jx_vit_base_p16_224-80ecf9dd.pth \
#       checkpoints/jx_vit_base_p16_224-80ecf9dd_mmseg.pth
_base_ = [
    './fasterrcnn_swinb_voc.py',
    '../_base_/models/vit_b16_simple_fpn.py'
]
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
pretrained = 'checkpoints/jx_vit_base_p16_224-80ecf9dd_mmseg.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmseg.VisionTransformer',
        img_size=(1024, 1024),  # position table size; any input size works
        out_indices=-1,  # the last layer's stride-16 map, as in ViTDet
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
        **_base_.vit_b16),
    neck=_base_.vit_simple_fpn_neck)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys=_base_.vit_no_decay_keys))
