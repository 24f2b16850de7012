# Full fine-tuning baseline: UperNet, ViT-B/16 (timm, ImageNet-21k -> 1k),
# ADE20K, 512x512 crops, 160k iterations: the Swin-B baseline's recipe with
# mmseg's ViT-B UperNet (layers 3/6/9/12 rescaled x4/x2/x1/x0.5 by
# MultiLevelNeck, as in mmseg's vit_vit-b16-ln_mln_upernet config).
#
# mmseg's stock VisionTransformer reads checkpoints in its own key layout;
# convert timm's release once (mmpeft's RepAdapterViT reads the original):
#   wget -P checkpoints https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/jx_vit_base_p16_224-80ecf9dd.pth  # noqa
#   python tools/convert_timm_vit.py \
#       checkpoints/jx_vit_base_p16_224-80ecf9dd.pth \
#       checkpoints/jx_vit_base_p16_224-80ecf9dd_mmseg.pth
_base_ = [
    './upernet_swinb_ade20k.py', '../_base_/models/vit_b16_simple_fpn.py'
]
pretrained = 'checkpoints/jx_vit_base_p16_224-80ecf9dd_mmseg.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionTransformer',
        img_size=(512, 512),
        out_indices=(2, 5, 8, 11),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
        **_base_.vit_b16),
    neck=dict(
        type='MultiLevelNeck',
        in_channels=[768, 768, 768, 768],
        out_channels=768,
        scales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[768, 768, 768, 768]),
    auxiliary_head=dict(in_channels=768, in_index=3))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys=_base_.vit_no_decay_keys))
