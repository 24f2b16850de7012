"""Shared by test_checkpoint_security.py and test_checkpoint_errors.py (no
tests here): a toy model / dataset / metric importable by config, so that
tools/train.py and tools/test.py run in seconds (in process or as
subprocesses), and the files the tests feed them."""
import copyreg
import os
import os.path as osp
import struct
import textwrap
import zipfile

import numpy as np
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


# ----------------------------------------------------------- crafted files
PLAIN_DTYPE_STATE = (3, '<', None, None, None, -1, -1, 0)  # numpy's, 'f8'


class Reduce:
    """Pickles as ``func(*args)``, then ``BUILD state`` if given: what a
    crafted file can ask of any name the allow-list admits."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) + (
            () if self.state is None else (self.state, ))


class NewObj:
    """Pickles as ``cls.__new__(cls)`` + ``BUILD state``, the way pickle
    saves a HistoryBuffer, with any state."""

    def __init__(self, cls, state):
        self.cls, self.state = cls, state

    def __reduce__(self):
        return (copyreg.__newobj__, (self.cls, ), self.state)

    @property
    def __class__(self):  # pickle checks NEWOBJ's class against it
        return self.cls


def numpy_array(shape, code, raw, dtype_state=PLAIN_DTYPE_STATE) -> Reduce:
    """A numpy array pickled as numpy does, every field chosen
    (``dtype_state=None``: the dtype's BUILD left out)."""
    from numpy.core.multiarray import _reconstruct
    dtype = Reduce(np.dtype, (code, False, True), dtype_state)
    return Reduce(_reconstruct, (np.ndarray, (0, ), b'b'),
                  (1, shape, dtype, False, raw))


def history_buffer(**state) -> NewObj:
    from mmengine.logging import HistoryBuffer
    state.setdefault('max_length', 10)
    state.setdefault('_log_history', np.array([1., 3.]))
    state.setdefault('_count_history', np.array([1, 1]))
    return NewObj(HistoryBuffer, state)


def with_message_hub(buffer) -> dict:
    """A training checkpoint whose message hub holds ``buffer``."""
    return dict(meta=dict(iter=1, epoch=0),
                state_dict={'linear.weight': torch.zeros(1, 4),
                            'linear.bias': torch.zeros(1)},
                message_hub=dict(log_scalars={'train/loss': buffer},
                                 runtime_info={}, resumed_keys={}))


def assert_error_shown(proc, name: str) -> str:
    """A tool that stopped on mmpeft's error ``name`` shows it as a user
    needs it: at the end of the output, not after a traceback (that is under
    --debug), exit status 1. Returns the message."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and 'Traceback' not in output, output[-3000:]
    message, hint = proc.stderr.rstrip().rsplit('\n', 1)
    assert hint == '(add --debug for the traceback)', output[-3000:]
    _, _, message = ('\n' + message).rpartition(f'\n{name}: ')
    assert message, output[-3000:]
    return message


def flip_bytes_of(path: str, key: str, count: int = 8) -> None:
    """Overwrite the first ``count`` bytes of ``state_dict[key]``'s data in
    the torch zip file at ``path`` with 0xFF (float32 NaNs), as a disk or
    copy error would: the archive stays readable (torch checks no CRC)."""
    data = torch.load(path, weights_only=False)['state_dict'][key]
    data = data.numpy().tobytes()
    with zipfile.ZipFile(path) as archive:
        info, = [i for i in archive.infolist() if '/data/' in i.filename
                 and archive.read(i) == data]
    with open(path, 'r+b') as f:
        f.seek(info.header_offset + 26)  # the local header's name / extra
        name, extra = struct.unpack('<HH', f.read(4))
        f.seek(info.header_offset + 30 + name + extra)
        f.write(b'\xff' * count)
