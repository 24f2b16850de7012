"""Shared by the tests/test_reliability_*.py files (this one holds no test).

Each method's Faster R-CNN VOC config shrunk to a seconds-long run on the
generated data (tiny Swin / ViT, 64 px images, small heads), what the tests
need to run it in process, through ``tools/train.py`` or through
``tools/dist_train.sh``, and a toy mmengine run for the hooks' logic.
"""
import os
import os.path as osp
import socket
import subprocess
import sys
import textwrap
from typing import Dict, Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

from helpers import REPO_ROOT, tiny_runner_cfg

METHOD_CONFIGS = dict(
    mona='configs/mona/fasterrcnn_swinb_voc.py',
    repadapter='configs/repadapter/fasterrcnn_vitb_voc.py',
    mimi='configs/mimi/fasterrcnn_swinb_voc.py')
METHODS = tuple(METHOD_CONFIGS)

TINY_SWIN = dict(
    embed_dims=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=7)
SWIN_CHANNELS = [32, 64, 128, 256]
IMG_SCALE = (64, 64)
TINY_VIT = dict(embed_dims=64, num_layers=2, num_heads=2, img_size=IMG_SCALE)
HEAD_WIDTH = 64


def tiny_method_cfg(method: str,
                    data_root: str,
                    work_dir: str,
                    max_iters: int = 2,
                    checkpoint_interval: Optional[int] = None,
                    validate: bool = False,
                    mimi_sigma_target: float = 8,
                    mimi_interval: int = 1) -> Config:
    """``method``'s config as a tiny run: model architecture and hooks as
    shipped, widths shrunk; no validation unless ``validate``."""
    cfg = tiny_runner_cfg(
        osp.join(REPO_ROOT, METHOD_CONFIGS[method]),
        data_root,
        work_dir,
        max_iters=max_iters,
        img_scale=IMG_SCALE)
    model = cfg.model
    if method == 'repadapter':
        model.backbone.update(TINY_VIT)
        model.neck[0].in_channels = TINY_VIT['embed_dims']
        model.neck[1].update(
            in_channels=[TINY_VIT['embed_dims']] * 4, out_channels=HEAD_WIDTH)
    else:
        model.backbone.update(TINY_SWIN)
        model.neck.update(in_channels=SWIN_CHANNELS, out_channels=HEAD_WIDTH)
    model.rpn_head.update(in_channels=HEAD_WIDTH, feat_channels=HEAD_WIDTH)
    model.roi_head.bbox_roi_extractor.out_channels = HEAD_WIDTH
    model.roi_head.bbox_head.update(
        in_channels=HEAD_WIDTH, fc_out_channels=128)
    model.train_cfg.rpn.sampler.num = 64
    model.train_cfg.rcnn.sampler.num = 64
    if method == 'mimi':
        for hook in cfg.custom_hooks:
            if hook.type == 'MiMiPruneHook':
                hook.update(sigma_target=mimi_sigma_target,
                            interval=mimi_interval, by_epoch=False)
    if checkpoint_interval is not None:
        cfg.default_hooks.checkpoint.interval = checkpoint_interval
    if validate:
        cfg.train_cfg.val_interval = checkpoint_interval or max_iters
    else:
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
        cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.experiment_name = osp.basename(str(work_dir))
    return cfg


def add_custom_hooks(cfg: Config, *hooks) -> Config:
    cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + list(hooks)
    return cfg


def write_module(directory: str, name: str, source: str) -> None:
    """A Python module that subprocesses import through custom_imports."""
    with open(osp.join(directory, f'{name}.py'), 'w') as f:
        f.write(textwrap.dedent(source))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_tool(args: Sequence[str],
             pythonpath: Sequence[str] = (),
             env: Optional[Dict[str, str]] = None,
             timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``args`` (a tools/ command) from the repo root with this venv's
    python / torchrun first on PATH; returns the finished process."""
    full_env = dict(os.environ, **(env or {}))
    full_env['PATH'] = osp.dirname(sys.executable) + os.pathsep + \
        full_env.get('PATH', '')
    full_env['PYTHONPATH'] = os.pathsep.join(
        [REPO_ROOT, *pythonpath, full_env.get('PYTHONPATH', '')])
    full_env.setdefault('OMP_NUM_THREADS', '1')
    return subprocess.run(
        list(args), cwd=REPO_ROOT, env=full_env, capture_output=True,
        text=True, timeout=timeout)


def output_tail(proc: subprocess.CompletedProcess, chars: int = 4000) -> str:
    return (proc.stdout + proc.stderr)[-chars:]


def load_checkpoint(path: str) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)


def assert_same_tensors(ours: Dict[str, torch.Tensor],
                        theirs: Dict[str, torch.Tensor]) -> None:
    """Same keys, bitwise equal tensors; the failure names what differs."""
    assert sorted(ours) == sorted(theirs)
    different = [k for k in theirs if not torch.equal(ours[k], theirs[k])]
    assert not different, (
        f'{len(different)} of {len(theirs)} tensors differ: {different[:8]}')


class ToyModel(BaseModel):
    """``loss = mean(linear(x)^2) + offset``; ``offset`` turns NaN at the
    forward passes listed in ``nan_losses`` (a NaN loss with finite
    gradients), ``poison_at`` makes the weights' gradient NaN too."""

    def __init__(self, nan_losses: Sequence[int] = (), poison_at=None):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.nan_losses = set(nan_losses)
        self.poison_at = poison_at
        self.calls = 0

    def forward(self, inputs, data_samples=None, mode='loss'):
        self.calls += 1
        loss = self.linear(torch.stack(inputs)).pow(2).mean()
        if self.calls in self.nan_losses:
            loss = loss + float('nan')
        if self.calls == self.poison_at:
            loss = loss * float('nan')
        return dict(loss=loss)


def toy_runner(work_dir, max_iters: int = 4, checkpoint: Optional[dict] = None,
               custom_hooks: Sequence = (), **model_args) -> Runner:
    """A seconds-long mmengine run of :class:`ToyModel` (SGD, 8 samples)."""
    dataset = [dict(inputs=torch.full((4,), float(i))) for i in range(8)]
    return Runner(
        model=ToyModel(**model_args),
        work_dir=str(work_dir),
        experiment_name=osp.basename(str(work_dir)),
        train_dataloader=dict(
            dataset=dataset,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='pseudo_collate'),
            batch_size=2),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=dict(
                type='CheckpointHook', by_epoch=False,
                **(checkpoint or dict(interval=max_iters)))),
        custom_hooks=list(custom_hooks),
        log_level='WARNING')
