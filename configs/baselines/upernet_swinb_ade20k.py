# Full fine-tuning baseline: UperNet, Swin-B (ImageNet-22k), ADE20K,
# 512x512 crops, 160k iterations, batch 16 (8 GPUs x 2).
_base_ = [
    '../_base_/models/upernet_swin.py', '../_base_/datasets/ade20k.py',
    '../_base_/schedules/seg_adamw_160k.py', '../_base_/runtimes/mmseg.py'
]
crop_size = (512, 512)
model = dict(data_preprocessor=dict(size=crop_size))
train_dataloader = dict(batch_size=2)
