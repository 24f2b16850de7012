# CPU transfer demo, step 2 of 2, Mona: swin_fasterrcnn_voc.py (the target
# domain, the tiny Swin pretrained on the COCO-format shapes by step 1,
# swin_fasterrcnn_coco.py) with that backbone frozen and a Mona adapter after
# each residual of every block (inner width 16); the adapters, the neck and
# the heads (fresh, as after ImageNet pretraining) train with the same
# schedule. The PEFT hooks (../_base_/peft_hooks.py) log the parameter table
# and write the merged deploy checkpoint + config and the adapter-only
# checkpoint beside iter_300.pth.
_base_ = ['./swin_fasterrcnn_voc.py', '../_base_/peft_hooks.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

# Step 1's detector checkpoint, in its default work dir: mmdet's Swin keeps
# the `backbone.` keys of a detector checkpoint (prefix stripped).
model = dict(
    backbone=dict(
        _base_.tiny_mona_swin, init_cfg=_base_.swin_pretrained_init))
