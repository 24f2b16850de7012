"""Deploy and adapter-only checkpoints beside every training checkpoint.

mmengine 0.10 has no ``after_save_checkpoint`` stage, so the hook runs at the
lowest priority after every stage where ``CheckpointHook`` (priority
VERY_LOW) saves — after a train iteration or epoch, a validation (best
checkpoints) and the end of training — and exports each checkpoint that the
message hub names (``last_ckpt``, ``best_ckpt*``) and that is new on disk.

A run killed (or out of disk) between ``iter_N.pth`` and its companions
leaves them missing; on resume and at the end of training the hook writes
every missing companion of the training checkpoints in the checkpoint
directory, each from that checkpoint's own weights (read from the file); the
files already there are kept.
"""
import copy
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Set

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner.checkpoint import _load_checkpoint

from .checkpoint_digest import digest_path
from .export import (ADAPTER_META_KEY, DEPLOY_META_KEY, adapter_checkpoint,
                     adapter_state_dict, base_identity, companion_paths,
                     deploy_config, deploy_model, dump_config_atomic,
                     save_atomic, write_deploy)
from .param_table import unwrap_model

# What CheckpointHook names a training checkpoint (not its companions).
CHECKPOINT_NAME = re.compile(r'^(iter|epoch)_\d+\.pth$|^best_.+\.pth$')
COMPANION_SUFFIXES = ('_deploy.pth', '_adapters.pth')


@HOOKS.register_module()
class AdapterMergeHook(Hook):
    """Beside ``work_dir/iter_N.pth`` (left unmerged and resumable) write

    * ``iter_N_deploy.pth`` + ``iter_N_deploy.py``: adapters merged wherever
      the maths allows, and the config that builds and loads that model;
    * ``iter_N_adapters.pth``: the trainable tensors and what rebuilds them
      on top of the frozen base (see :mod:`mmpeft.engine.export`).

    Files are written atomically. When ``CheckpointHook`` deletes an old
    checkpoint (``max_keep_ckpts``), its companions go with it.

    Args:
        deploy: write the deploy checkpoint and config.
        adapters: write the adapter-only checkpoint.
    """
    priority = 'LOWEST'

    def __init__(self, deploy: bool = True, adapters: bool = True):
        if not (deploy or adapters):
            raise ValueError('AdapterMergeHook with deploy=False and '
                             'adapters=False writes nothing; remove the hook '
                             'instead.')
        self.deploy = deploy
        self.adapters = adapters
        self._exported: Dict[str, int] = {}  # checkpoint -> mtime exported
        self._written: Dict[str, List[str]] = {}  # checkpoint -> companions
        self._base: Optional[dict] = None  # frozen weights never change

    def before_train(self, runner) -> None:
        """After a resume: the checkpoint we resumed from is not new, the
        companions written before are cleaned up like ours, and the missing
        ones are written."""
        saved = self._saved_checkpoints(runner)
        for path in saved:
            self._exported[path] = _mtime(path)
        for directory in {osp.dirname(path) for path in saved}:
            for name in os.listdir(directory):
                checkpoint = osp.join(directory, name)
                companions = [
                    p for p in companion_paths(checkpoint).values()
                    if osp.exists(p)
                ]
                if companions:
                    self._written.setdefault(checkpoint, companions)
        if saved:
            self.complete(runner, osp.dirname(saved[0]))

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None) -> None:
        self._export_new(runner)

    def after_train_epoch(self, runner) -> None:
        self._export_new(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._export_new(runner)

    def after_train(self, runner) -> None:
        self._export_new(runner)
        saved = self._saved_checkpoints(runner)
        if saved:
            self.complete(runner, osp.dirname(saved[0]))

    def complete(self, runner, directory: str) -> None:
        """Write the missing companions of every training checkpoint in
        ``directory``, each from the weights in that checkpoint file."""
        if not is_main_process():
            return
        for name in sorted(os.listdir(directory)):
            checkpoint = osp.join(directory, name)
            if not CHECKPOINT_NAME.match(name) or name.endswith(
                    COMPANION_SUFFIXES):
                continue
            missing = self._missing(checkpoint, runner)
            if not missing:
                continue
            try:
                state = _load_checkpoint(checkpoint, map_location='cpu')
                meta = state.get('meta') or {}
                if DEPLOY_META_KEY in meta or ADAPTER_META_KEY in meta:
                    continue  # renamed by the user: not a training checkpoint
                model = copy.deepcopy(unwrap_model(runner.model))
                model.load_state_dict(
                    {_strip_module(k): v
                     for k, v in state['state_dict'].items()},
                    strict=True)
            except Exception as error:  # keep training: warn, name the fix
                runner.logger.warning(
                    f'AdapterMergeHook: cannot write the missing '
                    f'{", ".join(sorted(missing))} file(s) of {checkpoint}: '
                    f'it does not load into this model ({error}). Write them '
                    'with tools/merge_adapters.py and the config that '
                    'trained it.')
                continue
            runner.logger.warning(
                f'AdapterMergeHook: {checkpoint} has no '
                f'{", ".join(sorted(missing))} file (a save was '
                'interrupted); writing it from that checkpoint.')
            self.export(runner, checkpoint, model=model, only=missing)
            self._exported.setdefault(checkpoint, _mtime(checkpoint))

    def _missing(self, checkpoint: str, runner) -> Set[str]:
        """The companions of ``checkpoint`` this hook writes and that do not
        exist: 'deploy', 'deploy_config', 'adapters'."""
        wanted = []
        if self.deploy:
            wanted.append('deploy')
            if 'model' in runner.cfg:
                wanted.append('deploy_config')
        if self.adapters:
            wanted.append('adapters')
        paths = companion_paths(checkpoint)
        return {kind for kind in wanted if not osp.exists(paths[kind])}

    def _saved_checkpoints(self, runner) -> Sequence[str]:
        info = runner.message_hub.runtime_info
        keys = ['last_ckpt'] + sorted(
            k for k in info if k.startswith('best_ckpt'))
        return [
            info[k] for k in keys
            if isinstance(info.get(k), str) and osp.isfile(info[k])
        ]

    def _export_new(self, runner) -> None:
        if not is_main_process():
            return
        for path in self._saved_checkpoints(runner):
            if self._exported.get(path) != _mtime(path):
                self.export(runner, path)
                self._exported[path] = _mtime(path)
        for path in [p for p in self._written if not osp.exists(p)]:
            for companion in self._written.pop(path):
                for name in (companion, digest_path(companion)):
                    if osp.exists(name):
                        os.remove(name)

    def export(self, runner, checkpoint: str, model=None,
               only: Optional[Set[str]] = None) -> None:
        """Write the companions of ``checkpoint`` from ``model`` (default:
        the runner's model, whose weights were just saved); ``only``: the
        subset of 'deploy', 'deploy_config', 'adapters' to write."""
        model = unwrap_model(runner.model) if model is None else model
        only = {'deploy', 'deploy_config', 'adapters'} if only is None else only
        paths = companion_paths(checkpoint)
        meta = dict(source_checkpoint=osp.abspath(checkpoint))
        metainfo = getattr(runner.train_dataloader.dataset, 'metainfo', None)
        if metainfo is not None:
            meta['dataset_meta'] = metainfo
        written = []
        has_model_cfg = 'model' in runner.cfg
        if self.deploy and 'deploy' in only:
            if not has_model_cfg:
                runner.logger.warning(
                    'AdapterMergeHook: the runner has no config '
                    '(Runner built without cfg), so no deploy config is '
                    'written; build it with Runner.from_cfg.')
            write_config = has_model_cfg and 'deploy_config' in only
            write_deploy(model, runner.cfg if write_config else None,
                         paths['deploy'], paths['deploy_config'], meta)
            written.append(paths['deploy'])
            if write_config:
                written.append(paths['deploy_config'])
        elif self.deploy and has_model_cfg and 'deploy_config' in only:
            dump_config_atomic(
                deploy_config(runner.cfg, deploy_model(model),
                              paths['deploy']), paths['deploy_config'])
            written.append(paths['deploy_config'])
        if self.adapters and 'adapters' in only:
            trained = adapter_state_dict(model)
            frozen = sorted(name for name, _ in model.named_parameters()
                            if name not in trained)
            if self._base is None or self._base['frozen_keys'] != frozen:
                self._base = base_identity(model, trained)
            save_atomic(adapter_checkpoint(model, self._base, meta),
                        paths['adapters'])
            written.append(paths['adapters'])
        self._written[checkpoint] = sorted(
            set(self._written.get(checkpoint, [])) | set(written))
        runner.logger.info(f'AdapterMergeHook: wrote {", ".join(written)}')


def _strip_module(key: str) -> str:
    return key[len('module.'):] if key.startswith('module.') else key


def _mtime(path: str) -> int:
    return os.stat(path).st_mtime_ns
