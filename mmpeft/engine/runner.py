"""Config loading and runner building shared by ``tools/train.py`` and ``tools/test.py``."""
import argparse
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS, init_default_scope
from mmengine.runner import Runner


def parse_launch_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Add the options every mm tool shares (``--cfg-options``,
    ``--launcher``, ``--local_rank``), parse, and export ``LOCAL_RANK`` for
    launchers that pass the rank as an argument."""
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
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_config(path: str, launcher: str, cfg_options: Optional[dict],
                work_dir: Optional[str]) -> Config:
    """The config with the CLI overrides applied; the work dir is chosen as
    in mmdet's tools: CLI > config > ``./work_dirs/<config name>``."""
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    return cfg


def build_runner(cfg: Config) -> Runner:
    """The config's ``runner_type`` if it sets one, else mmengine's Runner."""
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    # Look the runner up in the config's codebase (e.g. mmdet.registry).
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    return RUNNERS.build(cfg)
