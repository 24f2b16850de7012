# Full fine-tuning baseline: UperNet, DINOv2 ViT-B/14 (LVD-142M), ADE20K,
# 512x512 crops, 160k iterations: the Swin-B baseline's recipe with DINOv2-B
# (mmpretrain's VisionTransformer; its layers 3/6/9/12 rescaled
# x4/x2/x1/x0.5 by MultiLevelNeck, as in the ViT-B UperNet baseline). A
# 512x512 crop is padded to 518x518: DINOv2's own 37x37 patch grid.
#
# mmpretrain's stock VisionTransformer reads checkpoints in its own key
# layout; convert DINOv2's release once (the mmpeft hosts read the original
# with convert_weights=True):
#   wget -P checkpoints https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth  # noqa
#   python tools/convert_pretrain_vit.py dinov2 \
#       checkpoints/dinov2_vitb14_pretrain.pth \
#       checkpoints/dinov2_vitb14_pretrain_mmpretrain.pth
_base_ = [
    './upernet_swinb_ade20k.py', '../_base_/models/dinov2_b14.py'
]
pretrained = 'checkpoints/dinov2_vitb14_pretrain_mmpretrain.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.VisionTransformer',
        img_size=(512, 512),
        out_indices=(2, 5, 8, 11),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
        **_base_.dinov2_b14),
    neck=dict(
        type='MultiLevelNeck',
        in_channels=[768, 768, 768, 768],
        out_channels=768,
        scales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[768, 768, 768, 768]),
    auxiliary_head=dict(in_channels=768, in_index=3))
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys=_base_.dinov2_no_decay_keys))
