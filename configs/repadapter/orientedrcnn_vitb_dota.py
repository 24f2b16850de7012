# RepAdapter (Luo et al., arXiv 2302.08106) on ViT-B/16: Oriented R-CNN
# (le90), DOTA-v1.0, 1x:
# the full fine-tuning baseline with the RepAdapter method base (frozen ViT,
# adapters folded into qkv / fc1 in the deploy checkpoint).
_base_ = [
    '../baselines/orientedrcnn_vitb_dota.py',
    '../_base_/methods/repadapter.py'
]
model = dict(backbone=_base_.peft_backbone)
