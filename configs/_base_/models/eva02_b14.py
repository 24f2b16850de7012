# EVA-02 ViT-B/14 pieces (variables, as dinov2_b14.py): mmpretrain's
# ViTEVA02 with EVA-02-B's settings (mmpretrain's configs/eva02/
# eva02-base-p14_headless.py: SwiGLU with sub-LN, 2D RoPE), dense outputs
# as (B, 768, H/14, W/14) maps. A config starts from a DINOv2 one and swaps
# the backbone, e.g. for Mask R-CNN with LoRA:
#   _base_ = ['../lora/maskrcnn_dinov2b_coco.py', '../_base_/models/eva02_b14.py']
#   model = dict(backbone=dict(
#       _delete_=True, type='AdapterViTEVA02', img_size=(1024, 1024),
#       out_indices=-1, adapters=dict(attn=dict(qkv=dict(type='LoRA', r=64))),
#       convert_weights=True,
#       init_cfg=dict(type='Pretrained', checkpoint=_base_.download_eva02_b14['file']),
#       **_base_.eva02_b14))
#
# EVA-02's MIM-pretrained release (baaivision/EVA, EVA-02/asuka README "MIM
# pre-trained EVA-02"), read by AdapterViTEVA02 with convert_weights=True (or
# converted once with tools/convert_pretrain_vit.py eva02 IN OUT for the stock
# backbone). EVA-02's own detection code uses the `_p14to16` file, whose
# patch embedding is resampled to 16 pixels (then set patch_size=16 and drop
# the neck's in_stride).
download_eva02_b14 = dict(
    file='checkpoints/eva02_B_pt_in21k_p14.pt',
    command='mkdir -p checkpoints && wget -P checkpoints '
    'https://huggingface.co/Yuxin-CV/EVA-02/resolve/main/eva02/pt/eva02_B_pt_in21k_p14.pt')  # noqa
eva02_b14 = dict(
    arch='b',
    patch_size=14,
    sub_ln=True,
    drop_path_rate=0.1,
    out_type='featmap',
    final_norm=True)
