# A DINOv2-style ViT for the CPU demos: mmpretrain's VisionTransformer in
# DINOv2's layout (the class token, layer scale, a SwiGLU FFN as in ViT-g,
# the final LayerNorm), shrunk to width 64 and 4 layers to train in minutes,
# with 7-pixel patches (half DINOv2's 14 for the 256x192 demo images; 14 gave
# COCO bbox mAP 0.015 after step 1's 300 iterations:
# `tools/train.py configs/demo/dinov2_fasterrcnn_coco.py
# --cfg-options model.backbone.patch_size=14 model.neck.0.in_stride=14
# "model.neck.0.scale_factors=[4.0,2.0,1.0,0.5]"`), then ViTDet's simple
# pyramid: its stride-7 map resized to stride 8 first (in_stride=7, as the
# DINOv2-B configs resize stride 14 to 16), then strides 4-32, and a 64-wide
# FPN. Layer scale starts at 0.1 (DINOv2's 1e-5 is for its long
# pretraining; these models start from random initialisation). Variables
# that the demo configs pick by `_base_.<name>` (the stock bases own the
# real keys).
tiny_dinov2 = dict(
    type='mmpretrain.VisionTransformer',
    arch=dict(embed_dims=64, num_layers=4, num_heads=2,
              feedforward_channels=256),
    img_size=(192, 256),
    patch_size=7,
    layer_scale_init_value=0.1,
    layer_cfgs=dict(ffn_type='swiglu_fused'),
    drop_path_rate=0.1,
    out_type='featmap',
    out_indices=-1,
    final_norm=True,
    init_cfg=None)
tiny_dinov2_neck = [
    dict(type='SimpleFeaturePyramid', in_channels=64, in_stride=7,
         scale_factors=(2.0, 1.0, 0.5, 0.25)),
    dict(type='mmdet.FPN', in_channels=[64] * 4, out_channels=64, num_outs=5)
]
# Step 1's checkpoint (dinov2_fasterrcnn_coco.py), read by step 2 and by the
# methods tools/compare.py generates from it: the backbone's keys of the
# whole detector (mmengine's Pretrained init strips the prefix).
dinov2_pretrained_init = dict(
    type='Pretrained',
    checkpoint='work_dirs/dinov2_fasterrcnn_coco/iter_300.pth',
    prefix='backbone.')
