# DINOv2 ViT-B/14 pieces shared by the DINOv2 configs (full fine-tuning
# baselines and every method on the `dinov2` host). They are variables, not a
# `model`, so that a config can inherit a detector / segmentor base and this
# file side by side and plug them in:
#   model = dict(backbone=dict(_delete_=True, type=..., **_base_.dinov2_b14),
#                neck=_base_.dinov2_simple_fpn_neck)
#
# The backbone is mmpretrain's VisionTransformer with DINOv2-B's settings
# (mmpretrain's configs/dinov2/vit-base-p14_dinov2-pre_headless.py): ViT-B,
# 14-pixel patches, layer scale (init 1e-5, the trained values come from the
# checkpoint), LN eps 1e-6, the class token, and the final LayerNorm
# (DINOv2's `norm`) after the last layer. Dense outputs are the patch tokens
# as (B, 768, H/14, W/14) maps (out_type='featmap'); the class token is left
# out. mmcv's PatchEmbed pads an input to a multiple of 14 (512 -> 518: the
# 37x37 grid DINOv2 was trained on); the position table is resized to other
# grids on load and per input (bicubic).
#
# DINOv2's release (facebookresearch/dinov2, README "Pretrained models"), read
# by the mmpeft hosts with convert_weights=True, and its conversion to
# mmpretrain keys for the stock backbone: the download commands of
# tools/train.py's first-run check (mmpeft/engine/preflight.py).
download_dinov2_b14 = dict(
    file='checkpoints/dinov2_vitb14_pretrain.pth',
    command='mkdir -p checkpoints && wget -P checkpoints '
    'https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth')  # noqa
download_dinov2_b14_mmpretrain = dict(
    file='checkpoints/dinov2_vitb14_pretrain_mmpretrain.pth',
    command=download_dinov2_b14['command'] + ' && python '
    'tools/convert_pretrain_vit.py dinov2 '
    'checkpoints/dinov2_vitb14_pretrain.pth '
    'checkpoints/dinov2_vitb14_pretrain_mmpretrain.pth')
dinov2_b14 = dict(
    arch='base',
    patch_size=14,
    layer_scale_init_value=1e-5,
    drop_path_rate=0.1,
    out_type='featmap',
    with_cls_token=True,
    final_norm=True,
    norm_cfg=dict(type='LN', eps=1e-6),
    interpolate_mode='bicubic')

# Detection neck: ViTDet's simple feature pyramid on the last layer's map.
# The map has stride 14; in_stride=14 resizes it to stride 16 first (exactly
# H/16 rows for inputs padded to multiples of 32), so the pyramid's strides
# 4/8/16/32 are what the RPN anchors and RoI extractors of the Swin
# detectors assume. Then a stock FPN.
dinov2_simple_fpn_neck = [
    dict(
        type='SimpleFeaturePyramid',
        in_channels=768,
        in_stride=14,
        scale_factors=(4.0, 2.0, 1.0, 0.5)),
    dict(
        type='mmdet.FPN',
        in_channels=[768, 768, 768, 768],
        out_channels=256,
        num_outs=5)
]

# AdamW without weight decay on the position table, the class token, the
# layer scales and the LayerNorms (named ln1 / ln2 in mmpretrain).
dinov2_no_decay_keys = {
    'pos_embed': dict(decay_mult=0.),
    'cls_token': dict(decay_mult=0.),
    '.gamma1': dict(decay_mult=0.),
    '.gamma2': dict(decay_mult=0.),
    '.ln': dict(decay_mult=0.)
}
