"""Reading checkpoints: safely, and with errors that name the file and the cause.

Every checkpoint mmpeft reads goes through :func:`load_file`: mmengine's
``CheckpointLoader`` for local files (``init_cfg=dict(type='Pretrained')``,
``load_from``, ``--resume``, ``tools/test.py``; :mod:`mmpeft.compat`
registers it), ``--adapter`` files, ``tools/merge_adapters.py`` and the
converters.

**No pickled code.** Files are read with ``torch.load(weights_only=True)``:
tensors, containers and Python scalars, plus exactly the types mmengine's
own training checkpoints hold (:func:`safe_types`). A file that needs any
other global (an ``os.system`` payload, or a legacy full pickle: mmcv 1.x
objects, arbitrary classes) is refused with :class:`UnsafeCheckpointError`,
unless the user opts in for the process: ``--allow-pickle`` on the tools, or
``mmpeft_allow_pickle = True`` in the config.

**Errors name the file.** Missing, empty, truncated or foreign files raise
:class:`CheckpointReadError` with the path and what is wrong with it.

**The checkpoint must fit.** :func:`check_checkpoint_fits` (run by
:class:`~mmpeft.engine.CheckpointCheckHook` when the runner loads) refuses
deploy files under a training config and the reverse, adapter-only files as
the main checkpoint, and weights that leave the model partly unloaded;
:func:`resolve_auto_resume` picks the newest loadable checkpoint for
``--resume`` without a path.
"""
import argparse
import logging
import os
import os.path as osp
import pickle
import re
import zipfile
from typing import Callable, Dict, List, Mapping, Optional, Union

import numpy as np
import torch
from mmengine.logging import print_log
from torch import nn

ALLOW_PICKLE_KEY = 'mmpeft_allow_pickle'
ALLOW_PARTIAL_KEY = 'mmpeft_allow_partial'
DEPLOY_CONFIG_KEY = 'adapters_merged'

# mmengine's checkpoint names for --resume without a path.
_CHECKPOINT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')

_allow_pickle = False


class CheckpointReadError(RuntimeError):
    """A checkpoint file is missing, empty, truncated or not a checkpoint."""


class UnsafeCheckpointError(CheckpointReadError):
    """A checkpoint holds pickled objects or code ``weights_only`` refuses."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the config it is loaded with."""


# --------------------------------------------------------------------------
# The legacy-pickle opt-in
# --------------------------------------------------------------------------
def set_allow_pickle(enabled: bool = True) -> None:
    """Let :func:`load_file` fall back to a full pickle load (which can run
    code) for files ``weights_only`` refuses. For files you trust only."""
    global _allow_pickle
    _allow_pickle = bool(enabled)


def pickle_allowed() -> bool:
    return _allow_pickle


def allow_pickle_from_cfg(cfg: Mapping) -> None:
    """Turn the opt-in on when the config sets ``mmpeft_allow_pickle``
    (never off: ``--allow-pickle`` may have turned it on)."""
    if cfg.get(ALLOW_PICKLE_KEY, False):
        set_allow_pickle(True)


class _AllowPickleAction(argparse.Action):

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False,
                         **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, True)
        set_allow_pickle(True)


def add_allow_pickle_argument(parser: argparse.ArgumentParser) -> None:
    """``--allow-pickle`` on a tool: parsing it turns the opt-in on."""
    parser.add_argument(
        '--allow-pickle',
        action=_AllowPickleAction,
        help='load checkpoints that weights_only=True refuses (legacy full '
        'pickles: official Mona / mmcv 1.x files, files holding Python '
        'objects) as full pickles. Unpickling can run arbitrary code: only '
        'for files you trust. Config equivalent: mmpeft_allow_pickle = True')


# --------------------------------------------------------------------------
# Reading a file
# --------------------------------------------------------------------------
def safe_types() -> List:
    """What ``weights_only`` needs beyond tensors and Python containers to
    read mmengine's training checkpoints, and nothing more:

    * the message hub's ``HistoryBuffer``; its ``__setstate__`` only stores
      numpy arrays and its statistics methods (a crafted file could put
      another allowed object there: wrong statistics or an error, no code);
    * those methods: ``HistoryBuffer.__getstate__`` pickles them as
      ``getattr(HistoryBuffer, 'mean')``, so the name ``builtins.getattr``
      maps to :func:`_history_buffer_method`, which returns exactly
      ``HistoryBuffer.min / max / current / mean`` and refuses anything else
      (the real ``getattr`` would reach any attribute of any allowed object);
    * numpy arrays and scalars of numeric dtypes: ``_reconstruct`` and
      ``scalar`` only build arrays from bytes, ``dtype`` only parses a type
      code, the dtype classes are listed so that their state can be set;
      object, string and structured dtypes stay out (an object array would
      carry arbitrary objects).

    Files written with numpy 2 name ``numpy._core``, hence the aliases."""
    from mmengine.logging import HistoryBuffer
    from numpy.core.multiarray import _reconstruct, scalar
    types = [HistoryBuffer, np.ndarray, np.dtype,
             (_history_buffer_method, 'builtins.getattr')]
    types += [type(np.dtype(code)) for code in '?bBhHiIlLqQefdFD']
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        types += [(_reconstruct, f'{module}._reconstruct'),
                  (scalar, f'{module}.scalar')]
    return types


_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def _history_buffer_method(owner, name: str):
    """``getattr`` as checkpoints may use it: only the statistics methods
    of mmengine's ``HistoryBuffer``."""
    from mmengine.logging import HistoryBuffer
    if owner is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'GLOBAL builtins.getattr refused for ({owner!r}, {name!r}): '
        'checkpoints may only use it for HistoryBuffer.'
        f'{"/".join(_HISTORY_BUFFER_METHODS)}.')


def load_file(path: str,
              map_location: Union[str, Callable, None] = 'cpu',
              mmap: bool = False,
              allow_pickle: Optional[bool] = None):
    """``torch.load`` of a local file with ``weights_only=True`` and
    :func:`safe_types`; a file that needs more is refused (or, with the
    opt-in, loaded as a full pickle with a warning naming it).

    ``mmap`` memory-maps the tensors of zip-format files (reading only the
    metadata). Raises :class:`CheckpointReadError` naming ``path`` and what
    is wrong with it."""
    path = osp.expanduser(str(path))
    if allow_pickle is None:
        allow_pickle = _allow_pickle
    if not osp.exists(path):
        raise CheckpointReadError(
            f'Checkpoint {path!r} does not exist. Check the path (a relative '
            f'path is relative to {os.getcwd()!r}).')
    if not osp.isfile(path):
        raise CheckpointReadError(
            f'Checkpoint {path!r} is not a file. Pass the .pth file itself.')
    size = osp.getsize(path)
    if size == 0:
        raise CheckpointReadError(
            f'Checkpoint {path!r} is empty (0 bytes): it was never written '
            'completely (an interrupted copy or download, a full disk). '
            'Copy or download it again, or use another checkpoint.')
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(safe_types()):
            return torch.load(path, map_location=map_location, mmap=mmap,
                              weights_only=True)
    except Exception as error:  # torch raises half a dozen types here
        refused = _refused_globals(error)
        if refused is None:
            raise CheckpointReadError(_unreadable_message(path, size,
                                                          error)) from error
    if not allow_pickle:
        raise UnsafeCheckpointError(
            f'Refused to load {path!r}: it holds pickled Python objects or '
            f'code ({refused}), which weights_only=True does not load and '
            'unpickling would run. A checkpoint from an unknown source may '
            'be malicious. If you trust this file (e.g. an official Mona / '
            'mmcv 1.x checkpoint), opt in with --allow-pickle (tools/'
            'train.py, test.py, merge_adapters.py, convert_*.py) or '
            f'{ALLOW_PICKLE_KEY} = True in the config; better, convert it '
            'once to a weights-only file (tools/convert_mona_official.py '
            '--allow-pickle SRC DST) and use that.')
    print_log(
        f'Loading {path!r} as a full pickle ({refused}) because '
        f'{ALLOW_PICKLE_KEY} / --allow-pickle is set: unpickling can run '
        'code, do this only for files you trust.',
        logger='current',
        level=logging.WARNING)
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise CheckpointReadError(_unreadable_message(path, size,
                                                      error)) from error


def _refused_globals(error: Exception) -> Optional[str]:
    """What ``weights_only`` refused, if that is why loading failed; None
    for a file that is broken rather than unsafe."""
    text = str(error)
    if 'Weights only load failed' not in text:
        return None
    names = re.findall(r'GLOBAL ([\w.]+)', text) + re.findall(
        r"but got <class '([\w.]+)'>", text) + re.findall(
            r'unrecognized function ([\w.<>]+)', text)
    if names:
        return ', '.join(dict.fromkeys(names))
    return None  # e.g. "Unsupported operand": not a pickle stream at all


def _unreadable_message(path: str, size: int, error: Exception) -> str:
    cause = ' '.join(str(error).split()) or type(error).__name__
    if len(cause) > 300:
        cause = cause[:300] + '...'
    with open(path, 'rb') as f:
        head = f.read(4)
    if head.startswith(b'PK\x03\x04'):
        what = ('a torch zip archive that is truncated or corrupt (an '
                'interrupted save, copy or download)')
    else:
        what = ('not a torch checkpoint (no torch zip archive, no pickle '
                'stream), or a truncated legacy-format one')
    return (f'Cannot read checkpoint {path!r} ({size} bytes): it is {what}. '
            f'torch.load said: {type(error).__name__}: {cause}. Copy or '
            'download the file again, or use another checkpoint.')


# --------------------------------------------------------------------------
# Does the checkpoint fit the config?
# --------------------------------------------------------------------------
def is_deploy_config(cfg: Mapping) -> bool:
    """Written by :func:`mmpeft.engine.export.deploy_config`: marked with
    ``adapters_merged``; an older one (no marker) is recognised by the
    deploy checkpoint it loads, so ``tools/test.py`` records the answer
    before it replaces ``load_from``."""
    if DEPLOY_CONFIG_KEY in cfg:
        return bool(cfg[DEPLOY_CONFIG_KEY])
    return str(cfg.get('load_from') or '').endswith('_deploy.pth')


def state_dict_mismatch(model: nn.Module,
                        state: Mapping[str, torch.Tensor]) -> Dict[str, list]:
    """Keys of ``model`` that ``state`` leaves unloaded, keys of ``state``
    the model does not have, and keys of another shape (as mmengine's
    loader sees them: a DDP ``module.`` prefix is stripped)."""
    ours = model.state_dict()
    theirs = {
        re.sub(r'^module\.', '', key): value
        for key, value in state.items() if not key.startswith('_')
    }
    return dict(
        missing=sorted(k for k in ours if k not in theirs),
        unexpected=sorted(k for k in theirs if k not in ours),
        shape=sorted(
            f'{k}: checkpoint {tuple(v.shape)} vs model '
            f'{tuple(ours[k].shape)}' for k, v in theirs.items()
            if k in ours and hasattr(v, 'shape') and v.shape != ours[k].shape))


def check_checkpoint_fits(model: nn.Module,
                          checkpoint: Mapping,
                          path: str,
                          cfg: Mapping,
                          resume: bool = False,
                          allow_partial: bool = False,
                          training: bool = False) -> Dict[str, list]:
    """Raise :class:`CheckpointMismatchError` unless ``checkpoint`` (read
    from ``path``, not yet in ``model``) is the right kind of file for
    ``cfg`` and fills every weight of ``model`` (with ``allow_partial``, a
    partial load is returned instead). ``training`` (``load_from`` of a
    training run): adapters the checkpoint lacks keep their init, as when
    PEFT starts from a stock detector. Returns the mismatch."""
    from .export import ADAPTER_META_KEY, DEPLOY_META_KEY
    from .param_table import adapter_prefixes
    from ..models.peft_backbone import _preview
    meta = checkpoint.get('meta') or {}
    config = getattr(cfg, 'filename', None) or 'this config'
    stem = osp.splitext(path)[0]
    if ADAPTER_META_KEY in meta and not resume:
        raise CheckpointMismatchError(
            f'{path} is an adapter-only checkpoint (trainable tensors only, '
            'no frozen base), not a full model. Load the base checkpoint it '
            'was trained on and the adapters on top: tools/test.py CONFIG '
            f'BASE_CHECKPOINT --adapter {path}.')
    deploy_cfg = is_deploy_config(cfg)
    if DEPLOY_META_KEY in meta and not deploy_cfg and not resume:
        raise CheckpointMismatchError(
            f'{path} is a deploy checkpoint (adapters merged), but {config} '
            'builds the training model (adapters unmerged), so the merged '
            'weights would not load. Evaluate it with the deploy config '
            f'written beside it: {stem}.py.')
    if deploy_cfg and DEPLOY_META_KEY not in meta and not resume:
        raise CheckpointMismatchError(
            f'{path} is not a deploy checkpoint, but {config} is a deploy '
            'config (it builds the merged model). Evaluate a training '
            'checkpoint with its training config, or this config with the '
            f'deploy checkpoint beside the training one ({stem}_deploy.pth, '
            'written by AdapterMergeHook or tools/merge_adapters.py).')
    state = checkpoint.get('state_dict', checkpoint)
    mismatch = state_dict_mismatch(model, state)
    adapters = adapter_prefixes(model)
    fresh = [k for k in mismatch['missing'] if k.startswith(adapters)]
    if training and not resume and adapters and fresh:
        mismatch['missing'] = [k for k in mismatch['missing']
                               if k not in fresh]
        print_log(
            f'load_from {path}: {len(fresh)} adapter weights are not in it '
            'and keep their init (fine-tuning starts from its other '
            'weights).', logger='current')
    if not any(mismatch.values()):
        return mismatch
    counts = (f'{len(mismatch["missing"])} of the model\'s '
              f'{len(model.state_dict())} weights unloaded '
              f'({_preview(mismatch["missing"])}), '
              f'{len(mismatch["unexpected"])} checkpoint keys the model does '
              f'not have ({_preview(mismatch["unexpected"])}), '
              f'{len(mismatch["shape"])} of another shape '
              f'({_preview(mismatch["shape"])})')
    if resume:
        raise CheckpointMismatchError(
            f'{path} is not a training checkpoint of {config}: {counts}. '
            'Resume only from this config\'s own work_dir/iter_*.pth or '
            'epoch_*.pth; to start from other weights (a stock Swin / ViT '
            'detector, pretrained backbone) use load_from '
            f'(--cfg-options load_from={path}) without --resume, or the '
            "backbone's init_cfg=dict(type='Pretrained', checkpoint=...).")
    if not allow_partial:
        raise CheckpointMismatchError(
            f'{path} does not fit the model of {config}: {counts}. The '
            'unloaded weights would keep their random init and the results '
            'would be wrong. Use the checkpoint trained with this config; '
            'for a deliberate partial load (e.g. a detector with another '
            'number of classes) pass --allow-partial (tools/test.py) or set '
            f'{ALLOW_PARTIAL_KEY} = True in the config.')
    print_log(
        f'Partial load of {path} ({ALLOW_PARTIAL_KEY} is set): {counts}.',
        logger='current',
        level=logging.WARNING)
    return mismatch


def check_optimizer_fits(optimizer: torch.optim.Optimizer, state: Mapping,
                         path: str, config: str = 'this config') -> None:
    """Raise :class:`CheckpointMismatchError` when ``state`` (a saved
    optimizer state dict) cannot be loaded into ``optimizer``: other
    parameter groups mean another model, freezing policy or paramwise_cfg."""
    saved = [len(group['params']) for group in state.get('param_groups', [])]
    ours = [len(group['params']) for group in optimizer.param_groups]
    if saved != ours:
        raise CheckpointMismatchError(
            f'{path} is not a training checkpoint of {config}: its optimizer '
            f'has {len(saved)} parameter groups of {saved} parameters, this '
            f'config\'s has {len(ours)} of {ours} (another model, freezing '
            'policy or paramwise_cfg). Resume only from this config\'s own '
            'work_dir/iter_*.pth; to start from these weights use load_from '
            f'(--cfg-options load_from={path}) without --resume.')


# --------------------------------------------------------------------------
# --resume without a path
# --------------------------------------------------------------------------
def resolve_auto_resume(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` (no path) should resume from: the one
    ``work_dir/last_checkpoint`` names if it loads, else the newest loadable
    ``iter_*.pth`` / ``epoch_*.pth`` in ``work_dir``, with a warning naming
    both; None when there is none (training starts from scratch)."""
    from .exact_resume_hook import check_resumable
    pointer = osp.join(work_dir, 'last_checkpoint')
    named = None
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip() or None
        if named is None:
            print_log(f'{pointer} is empty (an interrupted save).',
                      logger='current', level=logging.WARNING)
    candidates = ([named] if named else []) + _checkpoints_newest_first(
        work_dir)
    problems = []
    for path in dict.fromkeys(candidates):
        try:
            check_resumable(load_file(path, mmap=True), path)
        except (CheckpointReadError, RuntimeError) as error:
            problems.append(f'{path}: {error}')
            continue
        if path != named:
            print_log(
                f'Auto-resume: {named or "no checkpoint"} (named by '
                f'{pointer}) cannot be resumed from; resuming from {path}, '
                'the newest loadable checkpoint in the work dir, instead. '
                'Skipped: ' + ' | '.join(problems),
                logger='current',
                level=logging.WARNING)
        return path
    if problems:
        raise CheckpointReadError(
            f'--resume: no checkpoint in {work_dir} can be resumed from: ' +
            ' | '.join(problems) + '. Resume from a given file with '
            '--resume PATH, or start afresh in another work dir.')
    return None


def _checkpoints_newest_first(work_dir: str) -> List[str]:
    if not osp.isdir(work_dir):
        return []
    found = []
    for name in os.listdir(work_dir):
        match = _CHECKPOINT_NAME.match(name)
        if match:
            found.append((int(match.group(2)), osp.join(work_dir, name)))
    return [path for _, path in sorted(found, reverse=True)]
