"""Config loading and runner building shared by ``tools/train.py`` and ``tools/test.py``."""
import argparse
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS, init_default_scope
from mmengine.runner import Runner

from .checkpoint_io import (add_allow_pickle_argument, allow_pickle_from_cfg,
                            resolve_auto_resume)


def parse_launch_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Add the options every mm tool shares (``--cfg-options``,
    ``--launcher``, ``--local_rank``, ``--allow-pickle``), parse, and export
    ``LOCAL_RANK`` for launchers that pass the rank as an argument."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed launchers pass `--local-rank` (torch >= 2.0) or
    # `--local_rank`.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_allow_pickle_argument(parser)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_config(path: str, launcher: str, cfg_options: Optional[dict],
                work_dir: Optional[str]) -> Config:
    """The config with the CLI overrides applied; the work dir is chosen as
    in mmdet's tools: CLI > config > ``./work_dirs/<config name>``. A config
    with ``mmpeft_allow_pickle = True`` turns the legacy-pickle opt-in on
    (before any checkpoint is read, e.g. by ``--resume``'s check)."""
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    allow_pickle_from_cfg(cfg)
    return cfg


def build_runner(cfg: Config) -> Runner:
    """The config's ``runner_type`` if it sets one, else mmengine's Runner,
    with :class:`~mmpeft.engine.CheckpointCheckHook` added (a checkpoint
    that does not fit is refused) and ``resume=True`` without ``load_from``
    resolved to the newest loadable checkpoint of the work dir."""
    allow_pickle_from_cfg(cfg)
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(_hook_type(h) == 'CheckpointCheckHook' for h in hooks):
        cfg.custom_hooks = [*hooks, dict(type='CheckpointCheckHook')]
    if cfg.get('resume') and not cfg.get('load_from'):
        cfg.load_from = resolve_auto_resume(cfg.work_dir)
        if cfg.load_from is None:
            print_log(
                f'--resume: no checkpoint in {cfg.work_dir} to resume from; '
                'training starts from scratch.', logger='current')
            cfg.resume = False
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    # Look the runner up in the config's codebase (e.g. mmdet.registry).
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    return RUNNERS.build(cfg)


def _hook_type(hook) -> str:
    """'CheckpointCheckHook' for a hook config or instance."""
    if isinstance(hook, dict):
        return str(hook.get('type')).split('.')[-1]
    return type(hook).__name__
