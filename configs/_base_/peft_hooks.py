# The hooks every PEFT method config runs (configs/mona, repadapter, mimi);
# the including config imports mmpeft (custom_imports), which registers them.
#
# PEFTFreezeHook: applies the freezing policy (backbone frozen except its
#   adapters, neck and heads train), checks that the optimizer agrees, logs
#   the parameter table and writes work_dir/peft_params.json.
# AdapterMergeHook: beside every saved iter_N.pth / epoch_N.pth (left
#   unmerged and resumable) writes *_deploy.pth + *_deploy.py (adapters
#   merged, MiMi shrunk to its live neurons) and *_adapters.pth.
#
# Each hook carries its own priority (VERY_HIGH, LOWEST), so the list order
# does not matter: a config that adds hooks writes
#   custom_hooks = [*_base_.custom_hooks, dict(type=...)]
custom_hooks = [
    dict(type='PEFTFreezeHook'),
    dict(type='AdapterMergeHook'),
]
