# RepAdapter (Luo et al., arXiv 2302.08106): UperNet, ADE20K, 512x512 crops,
# 160k iterations, DINOv2 ViT-B/14 (LVD-142M): the full fine-tuning baseline
# with the repadapter_dinov2 method base, and RepAdapter's segmentation
# recipe (every backbone bias trains too; see upernet_vitb_ade20k.py).
_base_ = [
    '../baselines/upernet_dinov2b_ade20k.py',
    '../_base_/methods/repadapter_dinov2.py'
]
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
model = dict(backbone=_base_.peft_backbone)
custom_hooks = [
    dict(hook, train_biases=True) if hook.type == 'PEFTFreezeHook' else hook
    for hook in _base_.custom_hooks
]
