"""A run that diverges gradually (no test here): registered by import, so a
config names it through ``custom_imports`` (tools/train.py subprocesses put
tests/ on PYTHONPATH) and the in-process tests build it directly.

SGD on one weight w, inputs all ones, loss ``(1 + w^2) / 2 + w^4 / 400``.
With lr 2.1 a step multiplies w by ``-(1.1 + 0.021 w^2)``: from w = 0.01 the
loss stays near its floor 0.5 for ~35 iterations, grows for ~25 more (0.59
at iteration 40, 3.6 at 55, 66 at 59), then overflows to inf at iteration
63. A tenth of that lr, 0.21, multiplies w by ``0.79 - 0.0021 w^2``: back to
0 from any |w| < 29, so a checkpoint of the growing phase recovers, while
``iter_60.pth`` (w = 520), the newest finite one, diverges at 0.21 too.
"""
import os.path as osp

import torch
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, MODELS
from mmengine.runner import Runner
from mmengine.structures import BaseDataElement
from torch import nn

LR = 2.1
NAN_AT = 63  # the first non-finite loss
INTERVAL = 5  # iterations between checkpoints
MAX_ITERS = 80


@MODELS.register_module()
class GradualDivergence(BaseModel):

    def __init__(self, w: float = 0.01):
        super().__init__()
        self.w = nn.Parameter(torch.full((1, ), w))

    def forward(self, inputs, data_samples=None, mode='loss'):
        z = self.w * torch.stack(inputs)
        return dict(loss=((1 + z.pow(2)) / 2 + z.pow(4) / 400).mean())


def sgd_step(w: float, lr: float) -> float:
    """One step of the maths above, for references: w - lr (w + w^3 / 100)."""
    return w - lr * (w + w**3 / 100)


@DATASETS.register_module()
class OnesWithPaths(torch.utils.data.Dataset):
    """8 samples of ones, each with an ``img_path`` for the error to name."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return dict(inputs=torch.ones(1), data_samples=BaseDataElement(
            metainfo=dict(img_path=f'images/img_{index}.jpg')))


# InfiniteSampler: the iteration-based loop sleeps 2 s at every end of a
# DefaultSampler's epoch (4 iterations here).
LOADER = dict(dataset=dict(type='OnesWithPaths'),
              sampler=dict(type='InfiniteSampler', shuffle=False),
              collate_fn=dict(type='pseudo_collate'), batch_size=2,
              num_workers=0)


def diverging_runner(work_dir, lr: float = LR, max_iters: int = MAX_ITERS,
                     resume_from=None, load_from=None, custom_hooks=(),
                     **checkpoint):
    """The run in process: NaNGuardHook, a checkpoint every INTERVAL
    iterations (``checkpoint`` updates CheckpointHook's arguments)."""
    return Runner(
        model=GradualDivergence(),
        work_dir=str(work_dir),
        experiment_name=f'{osp.basename(str(work_dir))}_{resume_from}',
        train_dataloader=LOADER,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=lr)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=INTERVAL),
            checkpoint=dict(type='CheckpointHook', by_epoch=False,
                            interval=INTERVAL, **checkpoint)),
        custom_hooks=[dict(type='NaNGuardHook'), *custom_hooks],
        resume=resume_from is not None,
        load_from=resume_from or load_from,
        log_level='WARNING')
