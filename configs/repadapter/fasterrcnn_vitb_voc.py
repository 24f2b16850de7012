# RepAdapter (Luo et al., arXiv 2302.08106) on ViT-B/16: Faster R-CNN,
# Pascal VOC 07+12:
# the full fine-tuning baseline with the RepAdapter method base (frozen ViT,
# adapters folded into qkv / fc1 in the deploy checkpoint).
_base_ = [
    '../baselines/fasterrcnn_vitb_voc.py',
    '../_base_/methods/repadapter.py'
]
model = dict(backbone=_base_.peft_backbone)
