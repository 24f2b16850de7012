# The hooks every PEFT method config runs (configs/mona, repadapter, mimi);
# the including config imports mmpeft (custom_imports), which registers them.
#
# WorkDirLockHook: one run per work dir (work_dir/mmpeft_run.lock holds the
#   pid, host and start time); removes the temporary files of killed saves;
#   warns when auto-resume follows a last_checkpoint outside the work dir.
# PEFTFreezeHook: applies the freezing policy (backbone frozen except its
#   adapters, neck and heads train), checks that the optimizer agrees, logs
#   the parameter table and writes work_dir/peft_params.json.
# AdapterMergeHook: beside every saved iter_N.pth / epoch_N.pth (left
#   unmerged and resumable) writes *_deploy.pth + *_deploy.py (adapters
#   merged, MiMi shrunk to its live neurons) and *_adapters.pth; on resume
#   writes the ones an interrupted save left missing.
# NaNGuardHook: stops at the first non-finite loss before it is saved,
#   naming the images of the batch and the command to go back
#   (tools/train.py CONFIG --resume LAST_GOOD --resume-lr LOWER).
#
# Each hook carries its own priority (HIGHEST, VERY_HIGH, LOWEST,
# ABOVE_NORMAL), so the list order does not matter: a config that adds hooks
# writes
#   custom_hooks = [*_base_.custom_hooks, dict(type=...)]
custom_hooks = [
    dict(type='WorkDirLockHook'),
    dict(type='PEFTFreezeHook'),
    dict(type='AdapterMergeHook'),
    dict(type='NaNGuardHook'),
]
