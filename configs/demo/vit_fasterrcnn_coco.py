# CPU transfer demo, step 1 for the ViT host: swin_fasterrcnn_coco.py with
# the stock tiny ViT (mmseg VisionTransformer) and ViTDet's simple feature
# pyramid in front of the FPN, trained from random initialisation on the
# COCO-format shapes. tools/compare.py writes its bare backbone state dict
# (iter_900_backbone.pth) for the ViT rows of the demo table (Full ViT,
# RepAdapter).
# 900 iterations, three times the Swin's 300: from scratch, with no
# convolutional prior, the ViT detector is still near chance after 300
# (COCO bbox mAP 0.011 on the generated val set).
_base_ = ['./swin_fasterrcnn_coco.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
max_iters = 900
model = dict(
    backbone=dict(_delete_=True, **_base_.tiny_vit),
    neck=_base_.tiny_vit_neck)
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    _base_.warmup,
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters)
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
