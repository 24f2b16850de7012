# MiMi (Marouf et al., WACV 2024, arXiv 2311.03873) on mmdet's Swin: what
# every configs/mimi/ task config adds to its full fine-tuning baseline.
#
# The baseline's Swin-B frozen and a bottleneck adapter x + up(gelu(down(x)))
# at the attention and at the FFN of every block (48 adapters), C // sigma0
# neurons wide at the start (C = 128/256/512/1024 per stage). MiMiPruneHook
# switches off, round after round, the lowest-scored neurons over ALL
# adapters (score: the L1 norm of a neuron's weights / 2C). The neck and heads
# train fully; no optimizer change. `python tools/plot_mimi.py WORK_DIR` draws
# the allocation. Beside every checkpoint, AdapterMergeHook writes the deploy
# model, its adapters shrunk to their live neurons (`*_deploy.pth` and
# `*_deploy.py`, which sets `adapter_widths`).
#
# A task config is its baseline plus this file; it places the backbone and
# completes the pruning hook with its round spacing (how many rounds fit
# depends on the task's schedule):
#   _base_ = ['../baselines/<task>.py', '../_base_/methods/mimi.py']
#   model = dict(backbone=_base_.peft_backbone)
#   custom_hooks = [*_base_.custom_hooks,
#                   dict(_base_.mimi_prune, interval=..., by_epoch=...)]
# (mmengine refuses a key that two bases both set, and every baseline sets
# `model`: the method's backbone is a variable the task config puts in place.)
#
# Two pruning schedules (MiMiPruneHook `schedule`, README "MiMi conventions"):
# 'within' (the default, used here): rounds inside the baseline's one
# schedule, until the compression sum(C) / sum(live neurons) reaches
# sigma_target, at the training cost of the baseline and of the other
# methods; 'rounds': the official structure, every round a full schedule with
# the learning rate restarted, then a prune (configs/mimi/*_rounds.py).
_base_ = ['../peft_hooks.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

# sigma0 = 4: 6016 neurons, 6,979,584 adapter weights at the start.
sigma0 = 4
# sigma_target = 32: 752 neurons left, 8x fewer (uniform allocation would
# leave 872,448 adapter weights; the global ranking decides the real split).
sigma_target = 32
# rho = 0.5 (paper): 6016 -> 3008 -> 1504 -> 752 neurons, i.e. 3 rounds.
rho = 0.5

peft_backbone = dict(type='MiMiSwin', sigma0=sigma0)
# The 'within' pruning hook; the task config adds interval and by_epoch.
mimi_prune = dict(type='MiMiPruneHook', sigma_target=sigma_target, rho=rho)
