# ViT-B/16 pieces shared by the ViT configs (full fine-tuning baselines and
# RepAdapter). They are variables, not a `model`, so that a config can inherit
# a detector / segmentor base and this file side by side and plug them in:
#   model = dict(backbone=dict(_delete_=True, type=..., **_base_.vit_b16, ...),
#                neck=_base_.vit_simple_fpn_neck)
#
# The ViT is mmseg's VisionTransformer with timm's ViT-B/16 settings: LN eps
# 1e-6, a bias in the patch projection (timm has one; mmseg's default
# patch_bias=False would leave it unloaded) and the final LayerNorm (timm's
# `norm`) applied to the last layer's output.
# timm's ViT-B/16 release (read by RepAdapterViT with convert_weights=True)
# and its conversion to mmseg keys for the stock VisionTransformer: the
# download commands of tools/train.py's first-run check
# (mmpeft/engine/preflight.py).
download_vit_b16 = dict(
    file='checkpoints/jx_vit_base_p16_224-80ecf9dd.pth',
    command='mkdir -p checkpoints && wget -P checkpoints '
    'https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/jx_vit_base_p16_224-80ecf9dd.pth')  # noqa
download_vit_b16_mmseg = dict(
    file='checkpoints/jx_vit_base_p16_224-80ecf9dd_mmseg.pth',
    command=download_vit_b16['command'] + ' && python '
    'tools/convert_timm_vit.py checkpoints/jx_vit_base_p16_224-80ecf9dd.pth '
    'checkpoints/jx_vit_base_p16_224-80ecf9dd_mmseg.pth')
vit_b16 = dict(
    patch_size=16,
    embed_dims=768,
    num_layers=12,
    num_heads=12,
    mlp_ratio=4,
    qkv_bias=True,
    patch_bias=True,
    drop_rate=0.,
    attn_drop_rate=0.,
    drop_path_rate=0.1,
    with_cls_token=True,
    final_norm=True,
    norm_cfg=dict(type='LN', eps=1e-6),
    act_cfg=dict(type='GELU'),
    interpolate_mode='bicubic')

# Detection neck: ViTDet's simple feature pyramid turns the last layer's
# stride-16 map into strides 4/8/16/32 (768 channels each), then a stock FPN
# makes the 256-channel levels 4..64 that the Swin FPN detectors expect.
# `mmdet.FPN` resolves from the mmdet and the mmrotate scope alike.
vit_simple_fpn_neck = [
    dict(
        type='SimpleFeaturePyramid',
        in_channels=768,
        scale_factors=(4.0, 2.0, 1.0, 0.5)),
    dict(
        type='mmdet.FPN',
        in_channels=[768, 768, 768, 768],
        out_channels=256,
        num_outs=5)
]

# AdamW without weight decay on the position embedding, the class token and
# the ViT LayerNorms (named ln1 / ln2 in mmseg, which a 'norm' key misses).
vit_no_decay_keys = {
    'pos_embed': dict(decay_mult=0.),
    'cls_token': dict(decay_mult=0.),
    '.ln': dict(decay_mult=0.)
}
