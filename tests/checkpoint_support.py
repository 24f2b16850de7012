"""Shared by test_checkpoint_security.py and test_checkpoint_errors.py (no
tests here): a toy model / dataset / metric importable by config, so that
tools/train.py and tools/test.py run in seconds (in process or as
subprocesses), and the files the tests feed them."""
import os
import os.path as osp
import textwrap

import torch

from test_reliability_support import write_module

TOY_MODULE = 'toy_ckpt'
TOY_SOURCE = '''
    import torch
    from mmengine.evaluator import BaseMetric
    from mmengine.model import BaseModel
    from mmengine.registry import DATASETS, METRICS, MODELS
    from torch import nn


    @DATASETS.register_module()
    class ToyCkptData:

        def __len__(self):
            return 8

        def __getitem__(self, i):
            return dict(inputs=torch.full((4,), float(i)))


    @MODELS.register_module()
    class ToyCkptNet(BaseModel):

        def __init__(self, width=4):
            super().__init__()
            self.linear = nn.Linear(width, 1)

        def forward(self, inputs, data_samples=None, mode='loss'):
            out = self.linear(torch.stack(inputs))
            if mode == 'loss':
                return dict(loss=out.pow(2).mean())
            return list(out)


    @METRICS.register_module()
    class ToyCkptMetric(BaseMetric):

        def process(self, data_batch, data_samples):
            self.results.extend(float(x) for x in data_samples)

        def compute_metrics(self, results):
            return dict(mean_output=sum(results) / len(results))
'''


def toy_config(directory: str, work_dir: str, max_iters: int = 2,
               extra: str = '') -> str:
    """Write the toy module and a config using it into ``directory``
    (which must be on ``sys.path`` / PYTHONPATH); returns the config path.
    A checkpoint is saved at every iteration."""
    write_module(directory, TOY_MODULE, TOY_SOURCE)
    loader = ("dict(dataset=dict(type='ToyCkptData'), "
              "sampler=dict(type='DefaultSampler', shuffle=False), "
              "collate_fn=dict(type='pseudo_collate'), batch_size=2)")
    path = osp.join(directory, 'toy_config.py')
    with open(path, 'w') as f:
        f.write(textwrap.dedent(f'''\
            custom_imports = dict(imports=['{TOY_MODULE}'])
            default_scope = 'mmengine'
            work_dir = {str(work_dir)!r}
            model = dict(type='ToyCkptNet')
            train_dataloader = {loader}
            test_dataloader = {loader}
            test_cfg = dict()
            test_evaluator = dict(type='ToyCkptMetric')
            optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01))
            train_cfg = dict(by_epoch=False, max_iters={max_iters})
            default_hooks = dict(
                checkpoint=dict(type='CheckpointHook', by_epoch=False,
                                interval=1),
                logger=dict(type='LoggerHook', interval=1))
            randomness = dict(seed=0)
            log_level = 'WARNING'
            ''') + extra)
    return path


class Payload:
    """Unpickling it runs ``touch MARKER``: what a malicious checkpoint
    does (``os.system`` via ``__reduce__``)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def write_malicious(path: str, marker: str, state_dict=None) -> str:
    """A checkpoint that looks like any other, with the payload in meta."""
    state_dict = state_dict or dict(
        (k, torch.zeros(1)) for k in ('linear.weight', 'linear.bias'))
    torch.save(dict(meta=dict(note=Payload(marker)), state_dict=state_dict),
               path)
    return path


def corrupt_copies(good: str, directory: str) -> dict:
    """Broken versions of the checkpoint ``good``, by name: zero-byte,
    truncated to half, truncated to 100 bytes, random bytes, an HTML page."""
    with open(good, 'rb') as f:
        data = f.read()
    contents = dict(
        empty=b'',
        half=data[:len(data) // 2],
        head=data[:100],
        random=bytes(torch.randint(0, 256, (4096, ), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(
                                       0)).tolist()),
        html=b'<html><body>404 Not Found</body></html>\n')
    paths = {}
    for name, content in contents.items():
        paths[name] = osp.join(directory, f'{name}.pth')
        with open(paths[name], 'wb') as f:
            f.write(content)
    return paths
