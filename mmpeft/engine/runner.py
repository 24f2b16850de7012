"""Config loading and runner building shared by ``tools/train.py`` and
``tools/test.py``, and how the tools report errors (:func:`run_tool`)."""
import argparse
import logging
import os
import os.path as osp
import sys
import traceback
from typing import Callable, Optional

from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger, print_log
from mmengine.registry import RUNNERS, init_default_scope
from mmengine.runner import Runner

from .checkpoint_io import (add_allow_nonfinite_argument,
                            add_allow_pickle_argument, resolve_auto_resume,
                            take_opt_ins)
from .work_dir_lock_hook import lock_work_dir

MMPEFT_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--debug',
        action='store_true',
        help="show the traceback of mmpeft's errors (by default the message "
        'alone, which names the problem and the fix)')


def parse_launch_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Add the options every mm tool shares (``--cfg-options``,
    ``--launcher``, ``--local_rank``, ``--allow-pickle``,
    ``--allow-nonfinite``, ``--debug``), parse, and export ``LOCAL_RANK``
    for launchers that pass the rank as an argument."""
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
    add_allow_nonfinite_argument(parser)
    add_debug_argument(parser)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_config(path: str, launcher: str, cfg_options: Optional[dict],
                work_dir: Optional[str]) -> Config:
    """The config with the CLI overrides applied; the work dir is chosen as
    in mmdet's tools: CLI > config > ``./work_dirs/<config name>``. Opt-ins
    it sets (``mmpeft_allow_pickle = True`` ...) are turned on for this
    process before any checkpoint is read (e.g. by ``--resume``'s check) and
    taken out of it, so that no config the run writes carries them."""
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    take_opt_ins(cfg)
    return cfg


def build_runner(cfg: Config, training: bool = False) -> Runner:
    """The config's ``runner_type`` if it sets one, else mmengine's Runner,
    with :class:`~mmpeft.engine.CheckpointCheckHook` added (a checkpoint
    that does not fit is refused) and ``resume=True`` without ``load_from``
    resolved to the newest loadable checkpoint of the work dir. Opt-ins are
    taken out of ``cfg`` (the Runner writes it into the work dir).

    ``training``: when the config runs ``WorkDirLockHook``, the work dir is
    locked here, before the Runner writes anything into it (its config copy,
    its log); a run that finds it locked stops having written nothing."""
    take_opt_ins(cfg)
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
    if training and any(_hook_type(h) == 'WorkDirLockHook' for h in hooks) \
            and _launch_rank(cfg.get('launcher')) == 0:
        lock_work_dir(cfg.work_dir)
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


def _launch_rank(launcher: Optional[str]) -> int:
    """This process's global rank before ``torch.distributed`` starts (the
    launchers' environment), for work only rank 0 does."""
    if launcher in (None, 'none'):
        return 0
    for key in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK', 'PMI_RANK'):
        if os.environ.get(key, '').isdigit():
            return int(os.environ[key])
    return 0


def run_tool(main: Callable[[], None]) -> None:
    """Run a tool's ``main`` so that an error mmpeft raises on purpose (an
    mmpeft error class, or a ``ValueError`` raised by mmpeft's own code:
    their messages name the problem and the fix) is the first thing the user
    sees: printed alone, exit status 1. Its traceback goes to the run's log
    file, if there is one, and to the screen with ``--debug``. Other errors
    keep Python's traceback."""
    try:
        main()
    except Exception as error:  # noqa: B902  re-raised unless ours
        if '--debug' in sys.argv[1:] or not is_named_error(error):
            raise
        _log_traceback(error)
        print(f'{type(error).__name__}: {error}\n(add --debug for the '
              'traceback)', file=sys.stderr)
        sys.exit(1)


def is_named_error(error: BaseException) -> bool:
    """mmpeft's error classes, and ValueErrors raised in mmpeft (argument
    checks), not errors of other libraries or bugs."""
    if type(error).__module__.split('.')[0] == 'mmpeft':
        return True
    frames = traceback.extract_tb(error.__traceback__)
    return isinstance(error, ValueError) and bool(frames) and \
        osp.abspath(frames[-1].filename).startswith(MMPEFT_DIR + os.sep)


def _log_traceback(error: BaseException) -> None:
    """Append the traceback to the log files of the current logger (the
    runner's ``work_dir/<timestamp>/<timestamp>.log``), if any."""
    logger = MMLogger.get_current_instance()
    text = ''.join(traceback.format_exception(error))
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.emit(logger.makeRecord(logger.name, logging.ERROR,
                                           __file__, 0, text, None, None))
