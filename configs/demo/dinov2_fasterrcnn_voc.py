# CPU demo on the dinov2 host, step 2, Full: swin_fasterrcnn_voc.py with the
# tiny DINOv2-style ViT initialised from step 1 (dinov2_fasterrcnn_coco.py)
# and every weight trained on the VOC-format target domain. A full
# fine-tuning baseline tools/compare.py takes; each method's config is
# generated from its dinov2 method base (configs/_base_/methods/
# *_dinov2.py) with this backbone and its step-1 weights:
#   python tools/compare.py configs/demo/dinov2_fasterrcnn_voc.py \
#       --methods full lora adapter adaptformer mona
# (MiMi is a Swin preset: it has no dinov2 form.)
_base_ = ['./swin_fasterrcnn_voc.py', './_base_/tiny_dinov2.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        _base_.tiny_dinov2, _delete_=True,
        init_cfg=_base_.dinov2_pretrained_init),
    neck=_base_.tiny_dinov2_neck)
