# MiMi (Marouf et al., WACV 2024): Mask R-CNN, Swin-B (ImageNet-22k), COCO, 1x.
#
# Model, data and schedule are those of the full fine-tuning baseline, except
# that the pretrained Swin-B is frozen and a bottleneck adapter
# x + up(gelu(down(x))) follows the attention and the FFN of every block (48
# adapters), C // sigma0 neurons wide at the start (C = 128/256/512/1024 per
# stage). MiMiPruneHook switches off, every `prune_interval` epochs, the `rho`
# fraction of the live neurons with the lowest normalised score over ALL
# adapters, until the compression sum(C) / sum(live neurons) reaches
# sigma_target. The neck and heads train fully. `python tools/plot_mimi.py
# WORK_DIR` draws the allocation. Beside every checkpoint, AdapterMergeHook
# writes the deploy model, its adapters shrunk to their live neurons
# (`*_deploy.pth` and `*_deploy.py`, which sets `adapter_widths`).
_base_ = ['../baselines/maskrcnn_swinb_coco.py', '../_base_/peft_hooks.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

# sigma0 = 4: 6016 neurons, 6,979,584 adapter weights at the start.
sigma0 = 4
# sigma_target = 32: 752 neurons left, 8x fewer (uniform allocation would
# leave 872,448 adapter weights; the global ranking decides the real split).
sigma_target = 32
# rho = 0.5 (paper): 6016 -> 3008 -> 1504 -> 752 neurons, i.e. 3 rounds.
rho = 0.5
# One round after epochs 2, 4 and 6 of 12: six epochs of fine-tuning follow
# the last round (lr steps at epochs 8 and 11).
prune_interval = 2

model = dict(backbone=dict(type='MiMiSwin', sigma0=sigma0))
custom_hooks = [
    *_base_.custom_hooks,
    dict(
        type='MiMiPruneHook',
        sigma_target=sigma_target,
        rho=rho,
        interval=prune_interval,
        by_epoch=True)
]
