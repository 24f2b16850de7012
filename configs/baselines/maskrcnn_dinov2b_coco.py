# Full fine-tuning baseline: Mask R-CNN, DINOv2 ViT-B/14 (LVD-142M), COCO,
# 1x: the Swin-B baseline with the backbone swapped for DINOv2-B (mmpretrain's
# VisionTransformer, reached from the mmdet scope as
# `mmpretrain.VisionTransformer`) and ViTDet's simple feature pyramid (from
# mmpeft, its stride-14 map resized to stride 16) in front of the FPN.
#
# mmpretrain's stock VisionTransformer reads checkpoints in its own key
# layout; convert DINOv2's release once (the mmpeft hosts read the original
# with convert_weights=True):
#   wget -P checkpoints https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth  # noqa
#   python tools/convert_pretrain_vit.py dinov2 \
#       checkpoints/dinov2_vitb14_pretrain.pth \
#       checkpoints/dinov2_vitb14_pretrain_mmpretrain.pth
_base_ = [
    './maskrcnn_swinb_coco.py', '../_base_/models/dinov2_b14.py'
]
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
pretrained = 'checkpoints/dinov2_vitb14_pretrain_mmpretrain.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.VisionTransformer',
        img_size=(1024, 1024),  # position table size; any input size works
        out_indices=-1,  # the last layer's map, as in ViTDet
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
        **_base_.dinov2_b14),
    neck=_base_.dinov2_simple_fpn_neck)
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys=_base_.dinov2_no_decay_keys))
