"""Registered hooks: freezing and accounting, MiMi pruning, merge on save,
divergence and resume guards, one run per work dir."""
from .adapter_load_hook import AdapterLoadHook
from .adapter_merge_hook import AdapterMergeHook
from .checkpoint_check_hook import CheckpointCheckHook
from .checkpoint_io import (CheckpointMismatchError, CheckpointReadError,
                            UnsafeCheckpointError)
from .exact_resume_hook import (ExactResumeHook, NotResumableError,
                                check_resumable_file)
from .export import (AdapterCheckpointError, adapter_checkpoint,
                     load_adapter_checkpoint, write_deploy)
from .mimi_prune_hook import MiMiPruneHook
from .nan_guard_hook import NaNGuardHook, NonFiniteLossError, ResumeLRHook
from .param_table import count_params, format_table
from .peft_freeze_hook import (FreezePolicy, FreezePolicyError, PEFTFreezeHook,
                               apply_freeze_policy)
from .work_dir_lock_hook import WorkDirLockedError, WorkDirLockHook

__all__ = [
    'AdapterLoadHook', 'AdapterMergeHook', 'AdapterCheckpointError',
    'CheckpointCheckHook', 'CheckpointMismatchError', 'CheckpointReadError',
    'UnsafeCheckpointError',
    'adapter_checkpoint', 'load_adapter_checkpoint', 'write_deploy',
    'count_params', 'format_table', 'FreezePolicy', 'FreezePolicyError',
    'PEFTFreezeHook', 'apply_freeze_policy',
    'ExactResumeHook', 'NotResumableError', 'check_resumable_file',
    'NaNGuardHook', 'NonFiniteLossError', 'ResumeLRHook', 'MiMiPruneHook',
    'WorkDirLockHook', 'WorkDirLockedError'
]
