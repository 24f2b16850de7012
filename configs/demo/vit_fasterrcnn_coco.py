# CPU transfer demo, step 1 for the ViT host: swin_fasterrcnn_coco.py with
# the stock tiny ViT (mmseg VisionTransformer, 8-pixel patches) and ViTDet's
# simple feature pyramid in front of the FPN, trained from random
# initialisation on the COCO-format shapes. tools/compare.py writes its bare
# backbone state dict (iter_300_backbone.pth) for the ViT rows of the demo
# table (Full ViT, RepAdapter).
_base_ = ['./swin_fasterrcnn_coco.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, **_base_.tiny_vit),
    neck=_base_.tiny_vit_neck)
