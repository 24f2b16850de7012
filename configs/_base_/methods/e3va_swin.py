# E3VA (Yin et al., ACM MM 2023, arXiv 2306.09729) on mmdet's Swin: what
# every configs/e3va/*_swinb_* task config adds to its full fine-tuning
# baseline.
#
# The baseline's Swin-B frozen and run without an autograd graph, and beside
# it a trainable highway (mmpeft/adapters/e3va.py, mmpeft/models/e3va_swin.py):
# - per block, one adapter reads the (shifted-)window attention output and
#   one the MLP output (paper Fig. 2: "intermediate activations from
#   W/SA-MSA and MLP are sent to E3VA"); both add into the highway's own
#   token state, carried from block to block (parallel adapters, not
#   stacked: the paper's list of contributions);
# - after each stage the state goes through that stage's own patch merging,
#   frozen and shared (Fig. 2: "downsampling layers ... inherited from the
#   backbone model");
# - at every output the state joins the feature the FPN reads through a
#   trainable LayerNorm, which starts at scale 0 (Fig. 2: "integrated to the
#   FPN with trainable norm"; the zero start is ours: training starts from
#   the frozen backbone's features).
# The adapter is the paper's "dual low-rank" structure read as a bottleneck
# of width m whose two projections are each two rank-k factors; m = 64, k = 8
# and the init are our choices (the paper states none; see the module
# docstring). Swin-B: 461,312 adapter + 3,840 norm parameters (0.54% of the
# backbone). Nothing back-propagates through a block, so the backbone keeps no
# activation for backward (docs: README "E3VA").
#
# Nothing merges: E3VA is a side network. AdapterMergeHook's `*_deploy.pth`
# keeps the highway (a deploy config that builds this backbone), and
# `*_adapters.pth` holds the highway, the neck and the heads: with the stock
# pretrained Swin-B they rebuild the trained model.
#
# A task config is its baseline plus this file, and places the backbone:
#   _base_ = ['../baselines/<task>.py', '../_base_/methods/e3va_swin.py']
#   model = dict(backbone=_base_.peft_backbone)
# (mmengine refuses a key that two bases both set, and every baseline sets
# `model`: the method's backbone is a variable the task config puts in
# place.) The neck and the heads train fully; no optimizer change (the
# baseline's AdamW and schedule; the join norms match its no-decay 'norm'
# key), so that the two runs differ only in what trains.
_base_ = ['../peft_hooks.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

# The official ImageNet-22k Swin-B release, read with convert_weights=True:
#   wget -P checkpoints https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window7_224_22k.pth  # noqa
e3va_pretrained = 'checkpoints/swin_base_patch4_window7_224_22k.pth'

# Merged over the baseline's backbone (depths, widths, drop path kept).
peft_backbone = dict(
    type='E3VASwinTransformer',
    adapter_cfg=dict(type='E3VAAdapter', hidden_dim=64, rank=8),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=e3va_pretrained))
