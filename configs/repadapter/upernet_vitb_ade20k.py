# RepAdapter (Luo et al., arXiv 2302.08106) on ViT-B/16: UperNet, ADE20K,
# 512x512 crops, 160k iterations: the full fine-tuning baseline with the
# RepAdapter method base (frozen ViT, adapters folded into qkv / fc1 in the
# deploy checkpoint).
_base_ = [
    '../baselines/upernet_vitb_ade20k.py', '../_base_/methods/repadapter.py'
]
model = dict(backbone=_base_.peft_backbone)

# RepAdapter's segmentation recipe: the official segmentation run
# (segmentation_task/tools/train.py) trains every parameter named '*head*',
# '*rep*' (the adapters) or '*bias*', i.e. also every bias of the frozen ViT
# (qkv, projections, FFN, LayerNorms, patch embedding: 102,912 parameters,
# 0.12% of the backbone, in the `tools/count_params.py` table of this file).
# Merging is unaffected (a bias is folded like any other), the deploy model
# stays a stock ViT, and the adapter-only file carries the biases.
custom_hooks = [
    dict(hook, train_biases=True) if hook.type == 'PEFTFreezeHook' else hook
    for hook in _base_.custom_hooks
]
