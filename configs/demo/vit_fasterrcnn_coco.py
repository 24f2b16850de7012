# CPU transfer demo, step 1 for the ViT host: swin_fasterrcnn_coco.py (the
# same data, schedule and stopping rule) with the stock tiny ViT (mmseg
# VisionTransformer, 8-pixel patches) and ViTDet's simple feature pyramid in
# front of the FPN, trained from random initialisation on the COCO-format
# shapes. tools/compare.py caches its best checkpoint and places its bare
# backbone state dict (vit_source_backbone.pth) for the ViT rows of the demo
# table (Full, Fixed, RepAdapter).
_base_ = ['./swin_fasterrcnn_coco.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, **_base_.tiny_vit),
    neck=_base_.tiny_vit_neck)
