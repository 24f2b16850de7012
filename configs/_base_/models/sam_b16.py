# SAM ViT-B image encoder pieces (variables, as dinov2_b14.py): mmpretrain's
# ViTSAM with SAM-B's settings (mmpretrain's configs/sam/
# vit-base-p16_sam_headless.py: 1024-pixel inputs, 14x14 windows with global
# attention in layers 3/6/9/12, relative positions, the 256-channel conv
# neck). Its output is one stride-16 map; a detector puts ViTDet's pyramid
# after it, e.g.
#   model = dict(backbone=dict(
#       _delete_=True, type='AdapterViTSAM', out_indices=-1,
#       adapters=dict(attn=dict(qkv=dict(type='LoRA', r=64))),
#       convert_weights=True,
#       init_cfg=dict(type='Pretrained', checkpoint=_base_.download_sam_b['file']),
#       **_base_.sam_b16),
#       neck=[dict(type='SimpleFeaturePyramid', in_channels=256),
#             dict(type='mmdet.FPN', in_channels=[256] * 4, out_channels=256,
#                  num_outs=5)])
#
# SAM's release (facebookresearch/segment-anything, README "Model
# Checkpoints"), read by AdapterViTSAM with convert_weights=True (its
# image_encoder part; or tools/convert_pretrain_vit.py sam IN OUT).
download_sam_b = dict(
    file='checkpoints/sam_vit_b_01ec64.pth',
    command='mkdir -p checkpoints && wget -P checkpoints '
    'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth')
sam_b16 = dict(
    arch='base',
    img_size=1024,
    patch_size=16,
    window_size=14,
    use_rel_pos=True,
    out_channels=256,
    drop_path_rate=0.1,
    out_type='featmap')
