# Mona (Yin et al., CVPR 2025): Mask R-CNN, Swin-B (ImageNet-22k), COCO, 1x:
# the full fine-tuning baseline with the Mona method base (frozen Swin-B, 48
# adapters).
_base_ = ['../baselines/maskrcnn_swinb_coco.py', '../_base_/methods/mona.py']
model = dict(backbone=_base_.peft_backbone)
