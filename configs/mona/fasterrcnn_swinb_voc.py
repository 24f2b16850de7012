# Mona (Yin et al., CVPR 2025): Faster R-CNN, Swin-B (ImageNet-22k), Pascal
# VOC 07+12, the baseline's 4-epoch schedule (dataset repeated 3x): the full
# fine-tuning baseline with the Mona method base (frozen Swin-B, 48 adapters).
_base_ = ['../baselines/fasterrcnn_swinb_voc.py', '../_base_/methods/mona.py']
model = dict(backbone=_base_.peft_backbone)
