# MiMi (Marouf et al., WACV 2024): UperNet, Swin-B (ImageNet-22k), ADE20K,
# 512x512 crops, 160k iterations, batch 16 (8 GPUs x 2).
#
# Model, data and schedule are those of the full fine-tuning baseline, except
# that the pretrained Swin-B is frozen and a bottleneck adapter
# x + up(gelu(down(x))) follows the attention and the FFN of every block (48
# adapters), C // sigma0 neurons wide at the start (C = 128/256/512/1024 per
# stage). MiMiPruneHook switches off, every `prune_interval` iterations, the
# `rho` fraction of the live neurons with the lowest normalised score over
# ALL adapters, until the compression sum(C) / sum(live neurons) reaches
# sigma_target. The decode heads train fully. `python tools/plot_mimi.py
# WORK_DIR` draws the allocation. Beside every checkpoint, AdapterMergeHook
# writes the deploy model, its adapters shrunk to their live neurons
# (`*_deploy.pth` and `*_deploy.py`, which sets `adapter_widths`).
_base_ = ['../baselines/upernet_swinb_ade20k.py', '../_base_/peft_hooks.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

# sigma0 = 4: 6016 neurons, 6,979,584 adapter weights at the start.
sigma0 = 4
# sigma_target = 32: 752 neurons left, 8x fewer.
sigma_target = 32
# rho = 0.5 (paper): 6016 -> 3008 -> 1504 -> 752 neurons, i.e. 3 rounds.
rho = 0.5
# One round every 16k iterations (with the validation / checkpoint interval):
# at 16k, 32k and 48k, then 112k iterations of fine-tuning.
prune_interval = 16000
# The official file's download command for tools/train.py's first-run check
# (the det model bases carry it; this seg lineage does not).
download_swin_b22k = dict(
    file='checkpoints/swin_base_patch4_window7_224_22k.pth',
    command='mkdir -p checkpoints && wget -P checkpoints '
    'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window7_224_22k.pth')  # noqa

# MiMiSwin extends mmdet's SwinTransformer (it takes every argument of the
# mmseg one used by the base), whose loader reads the official Microsoft
# checkpoint through convert_weights=True rather than the mmseg-converted one.
model = dict(
    backbone=dict(
        type='MiMiSwin',
        sigma0=sigma0,
        convert_weights=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/swin_base_patch4_window7_224_22k.pth')))
custom_hooks = [
    *_base_.custom_hooks,
    dict(
        type='MiMiPruneHook',
        sigma_target=sigma_target,
        rho=rho,
        interval=prune_interval,
        by_epoch=False)
]
