# CPU demo on the dinov2 host, step 1: swin_fasterrcnn_coco.py with the tiny
# DINOv2-style ViT (./_base_/tiny_dinov2.py) and its simple pyramid, trained
# from random initialisation on the COCO-format shapes: the "pretrained"
# model that dinov2_fasterrcnn_voc.py starts from.
#   python tools/train.py configs/demo/dinov2_fasterrcnn_coco.py
_base_ = ['./swin_fasterrcnn_coco.py', './_base_/tiny_dinov2.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, **_base_.tiny_dinov2),
    neck=_base_.tiny_dinov2_neck)
