# CPU transfer demo, step 2 of 2, Full on the ViT host: swin_fasterrcnn_voc.py
# with the stock tiny ViT, initialised from step 1 (vit_fasterrcnn_coco.py,
# its bare backbone state dict written by tools/compare.py), and the simple
# feature pyramid; every weight trains. The baseline of the demo table's ViT
# rows (compare/repadapter.py).
_base_ = ['./swin_fasterrcnn_voc.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        _base_.tiny_vit, _delete_=True,
        init_cfg=_base_.vit_pretrained_init),
    neck=_base_.tiny_vit_neck)
