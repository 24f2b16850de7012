# UperNet with a Swin-B backbone (stock mmseg upernet_swin.py, scaled to
# Swin-B as in configs/swin/swin-base-patch4-window7-in22k-pre_upernet_*).
# The backbone is mmseg's own SwinTransformer: mmdet's is not reachable from
# the mmseg scope by its bare name.
#
# mmseg's SwinTransformer has no `convert_weights`, so `pretrained` is the
# ImageNet-22k Swin-B checkpoint already converted to mmseg keys, as released by
# OpenMMLab (equivalently: the official swin_base_patch4_window7_224_22k.pth
# passed through mmseg's tools/model_converters/swin2mmseg.py):
# (download_swin_b22k_mmseg below has the download command).
# A config that inherits this file and wants another file overrides
# model.backbone.init_cfg.checkpoint (redefining `pretrained` is not enough).
pretrained = 'checkpoints/swin_base_patch4_window7_224_22k_20220317-4f79f7c0.pth'  # noqa
# Read by tools/train.py's first-run check (mmpeft/engine/preflight.py).
download_swin_b22k_mmseg = dict(
    file=pretrained,
    command='mkdir -p checkpoints && wget -P checkpoints '
    'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/swin_base_patch4_window7_224_22k_20220317-4f79f7c0.pth')  # noqa
norm_cfg = dict(type='SyncBN', requires_grad=True)
backbone_norm_cfg = dict(type='LN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='SwinTransformer',
        pretrain_img_size=224,
        embed_dims=128,
        patch_size=4,
        window_size=7,
        mlp_ratio=4,
        depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32],
        strides=(4, 2, 2, 2),
        out_indices=(0, 1, 2, 3),
        qkv_bias=True,
        qk_scale=None,
        patch_norm=True,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.3,
        use_abs_pos_embed=False,
        act_cfg=dict(type='GELU'),
        norm_cfg=backbone_norm_cfg,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(
        type='UPerHead',
        in_channels=[128, 256, 512, 1024],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=512,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=512,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
