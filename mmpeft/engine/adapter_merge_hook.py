"""Deploy and adapter-only checkpoints beside every training checkpoint.

mmengine 0.10 has no ``after_save_checkpoint`` stage, so the hook runs at the
lowest priority after every stage where ``CheckpointHook`` (priority
VERY_LOW) saves — after a train iteration or epoch, a validation (best
checkpoints) and the end of training — and exports each checkpoint that the
message hub names (``last_ckpt``, ``best_ckpt*``) and that is new on disk.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .export import (adapter_checkpoint, adapter_state_dict, base_identity,
                     companion_paths, save_atomic, write_deploy)
from .param_table import unwrap_model


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
        """After a resume: the checkpoint we resumed from is not new, and the
        companions written before are cleaned up like ours."""
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
                if osp.exists(companion):
                    os.remove(companion)

    def export(self, runner, checkpoint: str) -> None:
        """Write the companions of ``checkpoint`` from the runner's model
        (the weights that were just saved)."""
        model = unwrap_model(runner.model)
        paths = companion_paths(checkpoint)
        meta = dict(source_checkpoint=osp.abspath(checkpoint))
        metainfo = getattr(runner.train_dataloader.dataset, 'metainfo', None)
        if metainfo is not None:
            meta['dataset_meta'] = metainfo
        written = []
        if self.deploy:
            has_model_cfg = 'model' in runner.cfg
            if not has_model_cfg:
                runner.logger.warning(
                    'AdapterMergeHook: the runner has no config '
                    '(Runner built without cfg), so no deploy config is '
                    'written; build it with Runner.from_cfg.')
            write_deploy(model, runner.cfg if has_model_cfg else None,
                         paths['deploy'], paths['deploy_config'], meta)
            written.append(paths['deploy'])
            if has_model_cfg:
                written.append(paths['deploy_config'])
        if self.adapters:
            trained = adapter_state_dict(model)
            frozen = sorted(name for name, _ in model.named_parameters()
                            if name not in trained)
            if self._base is None or self._base['frozen_keys'] != frozen:
                self._base = base_identity(model, trained)
            save_atomic(adapter_checkpoint(model, self._base, meta),
                        paths['adapters'])
            written.append(paths['adapters'])
        self._written[checkpoint] = written
        runner.logger.info(f'AdapterMergeHook: wrote {", ".join(written)}')


def _mtime(path: str) -> int:
    return os.stat(path).st_mtime_ns
