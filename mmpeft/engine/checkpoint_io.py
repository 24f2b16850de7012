"""Reading checkpoints: safely, and with errors that name the file and the cause.

Every checkpoint mmpeft reads goes through :func:`load_file`: mmengine's
``CheckpointLoader`` for local files (``init_cfg=dict(type='Pretrained')``,
``load_from``, ``--resume``, ``tools/test.py``; :mod:`mmpeft.compat`
registers it), ``--adapter`` files, ``tools/merge_adapters.py`` and the
converters.

**No pickled code.** Files are read with ``torch.load(weights_only=True)``:
tensors, containers and Python scalars, plus the message hub and numpy
numbers of mmengine's own training checkpoints, rebuilt from checked plain
data (:mod:`mmpeft.engine.pickle_allowlist`). A file that needs any other
global (an ``os.system`` payload, or a legacy full pickle: mmcv 1.x objects,
arbitrary classes) is refused with :class:`UnsafeCheckpointError`, unless the
user opts in for the process: ``--allow-pickle`` on the tools, or
``mmpeft_allow_pickle = True`` in the config.

**Errors name the file.** Missing, empty, truncated or foreign files raise
:class:`CheckpointReadError` with the path and what is wrong with it; so do
weights that are not finite (:class:`NonFiniteCheckpointError`; opt-out
``--allow-nonfinite`` / ``mmpeft_allow_nonfinite``) and a file whose bytes no
longer match the SHA-256 written beside it (:class:`CorruptCheckpointError`,
:mod:`mmpeft.engine.checkpoint_digest`).

**Opt-ins hold for one process.** ``mmpeft_allow_*`` keys are taken out of a
config when a tool reads it (:func:`take_opt_ins`), so no config mmpeft
writes (the work dir's copy, deploy configs) carries them to a later run.

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
import re
import zipfile
from typing import Callable, Dict, List, Mapping, Optional, Set, Union

import torch
from mmengine.logging import print_log
from torch import nn

from .checkpoint_digest import file_sha256, recorded_sha256
from .pickle_allowlist import REFUSED, rebuild, safe_globals

ALLOW_PICKLE_KEY = 'mmpeft_allow_pickle'
ALLOW_PARTIAL_KEY = 'mmpeft_allow_partial'
ALLOW_NONFINITE_KEY = 'mmpeft_allow_nonfinite'
OPT_IN_KEYS = (ALLOW_PICKLE_KEY, ALLOW_PARTIAL_KEY, ALLOW_NONFINITE_KEY)
DEPLOY_CONFIG_KEY = 'adapters_merged'

# mmengine's checkpoint names for --resume without a path.
_CHECKPOINT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')

_opt_ins: Set[str] = set()  # the OPT_IN_KEYS this process was given


class CheckpointReadError(RuntimeError):
    """A checkpoint file is missing, empty, truncated or not a checkpoint."""


class UnsafeCheckpointError(CheckpointReadError):
    """A checkpoint holds pickled objects or code ``weights_only`` refuses."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the config it is loaded with."""


class NonFiniteCheckpointError(CheckpointReadError):
    """A checkpoint holds NaN or inf weights."""


class CorruptCheckpointError(CheckpointReadError):
    """A checkpoint's bytes differ from the SHA-256 recorded when written."""


# --------------------------------------------------------------------------
# Opt-ins: for this process, never in a file
# --------------------------------------------------------------------------
def set_opt_in(key: str, enabled: bool = True) -> None:
    """Turn one of :data:`OPT_IN_KEYS` on (or off) for this process."""
    if key not in OPT_IN_KEYS:
        raise KeyError(f'{key!r} is not one of {OPT_IN_KEYS}')
    (_opt_ins.add if enabled else _opt_ins.discard)(key)


def opt_in(key: str) -> bool:
    return key in _opt_ins


def set_allow_pickle(enabled: bool = True) -> None:
    """Let :func:`load_file` fall back to a full pickle load (which can run
    code) for files ``weights_only`` refuses. For files you trust only."""
    set_opt_in(ALLOW_PICKLE_KEY, enabled)


def pickle_allowed() -> bool:
    return opt_in(ALLOW_PICKLE_KEY)


def take_opt_ins(cfg: Mapping) -> None:
    """Turn on the opt-ins ``cfg`` sets (never off: a flag may have turned
    one on) and remove them from ``cfg``: given for one run (in the config
    or ``--cfg-options``), they must not travel into the configs that run
    writes (the work dir's copy, ``iter_N_deploy.py``), where a later
    ``tools/test.py`` would inherit them without being asked."""
    for key in OPT_IN_KEYS:
        if key in cfg and cfg.pop(key):
            set_opt_in(key)


def without_opt_ins(cfg: dict) -> dict:
    """``cfg`` (a plain dict about to be written) without opt-in keys."""
    return {k: v for k, v in cfg.items() if k not in OPT_IN_KEYS}


class _OptInAction(argparse.Action):
    """A flag whose parsing turns ``const`` (an opt-in key) on."""

    def __init__(self, option_strings, dest, const, **kwargs):
        super().__init__(option_strings, dest, nargs=0, const=const,
                         default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, True)
        set_opt_in(self.const)


_OPT_IN_FLAGS = {
    ALLOW_PICKLE_KEY: (
        '--allow-pickle',
        'load checkpoints that weights_only=True refuses (legacy full '
        'pickles: official Mona / mmcv 1.x files, files holding Python '
        'objects) as full pickles. Unpickling can run arbitrary code: only '
        'for files you trust.'),
    ALLOW_NONFINITE_KEY: (
        '--allow-nonfinite',
        'load checkpoints holding NaN / inf values (a warning names the '
        'tensors); by default that is an error, the weights are corrupt. For '
        'models that store inf on purpose.'),
}


def add_opt_in_argument(parser: argparse.ArgumentParser, key: str) -> None:
    """The flag of opt-in ``key`` on a tool: parsing it turns it on."""
    flag, help_text = _OPT_IN_FLAGS[key]
    parser.add_argument(
        flag, action=_OptInAction, const=key,
        help=f'{help_text} Config equivalent: {key} = True (for that run '
        'only: never copied into the configs it writes)')


def add_allow_pickle_argument(parser: argparse.ArgumentParser) -> None:
    add_opt_in_argument(parser, ALLOW_PICKLE_KEY)


def add_allow_nonfinite_argument(parser: argparse.ArgumentParser) -> None:
    add_opt_in_argument(parser, ALLOW_NONFINITE_KEY)


# --------------------------------------------------------------------------
# Reading a file
# --------------------------------------------------------------------------
def safe_types() -> List:
    """What ``weights_only`` may build beyond tensors and Python containers
    to read mmengine's training checkpoints: the global names of the message
    hub's ``HistoryBuffer`` and of numeric numpy arrays, scalars and dtypes,
    each mapped to a stand-in that only records checked plain data
    (:mod:`mmpeft.engine.pickle_allowlist`), and ``builtins.getattr`` for
    ``HistoryBuffer.min / max / current / mean`` alone. Object, string and
    structured dtypes stay out (an object array would carry arbitrary
    objects)."""
    return safe_globals()


def load_file(path: str,
              map_location: Union[str, Callable, None] = 'cpu',
              mmap: bool = False,
              allow_pickle: Optional[bool] = None):
    """``torch.load`` of a local file with ``weights_only=True`` and
    :func:`safe_types`; a file that needs more is refused (or, with the
    opt-in, loaded as a full pickle with a warning naming it). A file with a
    SHA-256 record beside it must match it, and every floating-point tensor
    must be finite (unless ``mmpeft_allow_nonfinite``).

    ``mmap`` memory-maps the tensors of zip-format files (reading only the
    metadata). Raises :class:`CheckpointReadError` naming ``path`` and what
    is wrong with it."""
    path = osp.expanduser(str(path))
    if allow_pickle is None:
        allow_pickle = pickle_allowed()
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
    check_digest(path)
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(safe_types()):
            checkpoint = rebuild(
                torch.load(path, map_location=map_location, mmap=mmap,
                           weights_only=True))
    except Exception as error:  # torch raises half a dozen types here
        if REFUSED in str(error):
            raise UnsafeCheckpointError(
                f'Refused to load {path!r}: it builds message-hub or numpy '
                'state that mmengine does not write, i.e. a crafted or '
                f'corrupt file ({_refused_state(error)}). Use another '
                'checkpoint.') from error
        refused = _refused_globals(error)
        if refused is None:
            raise CheckpointReadError(_unreadable_message(path, size,
                                                          error)) from error
    else:
        check_finite(checkpoint, path)
        return checkpoint
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
        checkpoint = torch.load(path, map_location=map_location,
                                weights_only=False)
    except Exception as error:
        raise CheckpointReadError(_unreadable_message(path, size,
                                                      error)) from error
    check_finite(checkpoint, path)
    return checkpoint


def check_digest(path: str) -> None:
    """Raise :class:`CorruptCheckpointError` if ``path`` has a SHA-256
    record beside it (written by mmpeft with the file) that its bytes no
    longer match."""
    try:
        recorded = recorded_sha256(path)
    except ValueError as error:
        raise CorruptCheckpointError(str(error)) from error
    if recorded is not None and file_sha256(path) != recorded:
        raise CorruptCheckpointError(
            f'Checkpoint {path!r} is corrupt since it was written: its bytes '
            f'no longer match the SHA-256 recorded beside it ({path}.sha256) '
            'when it was saved (a disk or copy error). Use another checkpoint '
            '(e.g. the previous iter_*.pth), or copy it again from a good '
            'source. If you changed the file on purpose, delete '
            f'{path}.sha256.')


def nonfinite_tensors(obj, prefix: str = '') -> List[str]:
    """Where ``obj`` (a loaded checkpoint) holds floating-point tensors with
    NaN or inf values: ``'state_dict.w (3 NaN, 0 inf of 40)'`` each."""
    if isinstance(obj, torch.Tensor):
        if not (obj.is_floating_point() or obj.is_complex()) or \
                bool(torch.isfinite(obj).all()):
            return []
        nan = int(torch.isnan(obj).sum())
        inf = int((~torch.isfinite(obj)).sum()) - nan
        return [f'{prefix} ({nan} NaN, {inf} inf of {obj.numel()})']
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return []
    found = []
    for key, value in items:
        found += nonfinite_tensors(value, f'{prefix}.{key}' if prefix else
                                   str(key))
    return found


def check_finite(checkpoint, path: str) -> None:
    """Raise :class:`NonFiniteCheckpointError` if a floating-point tensor of
    ``checkpoint`` (read from ``path``) holds NaN or inf: the weights of a
    diverged run, or a file damaged in a way its format does not detect.
    ``mmpeft_allow_nonfinite`` turns it into a warning."""
    bad = nonfinite_tensors(checkpoint)
    if not bad:
        return
    listed = '; '.join(bad[:5]) + (f'; and {len(bad) - 5} more'
                                   if len(bad) > 5 else '')
    if opt_in(ALLOW_NONFINITE_KEY):
        print_log(f'Loading {path!r} with non-finite values in {len(bad)} '
                  f'tensors ({ALLOW_NONFINITE_KEY} is set): {listed}.',
                  logger='current', level=logging.WARNING)
        return
    raise NonFiniteCheckpointError(
        f'Checkpoint {path!r} holds non-finite values (NaN / inf) in '
        f'{len(bad)} tensors: {listed}. Weights like these are corrupt (a '
        'diverged training, a damaged file) and give wrong results. Use '
        'another checkpoint; if this model stores inf on purpose, pass '
        '--allow-nonfinite (tools/train.py, test.py, merge_adapters.py) or '
        f'set {ALLOW_NONFINITE_KEY} = True in the config.')


def _refused_state(error: Exception) -> str:
    text = ' '.join(str(error).split())
    reason = text[text.index(REFUSED) + len(REFUSED) + 2:]
    for end in (' Check the ', ' Please file an issue'):
        reason = reason.split(end)[0]
    return reason[:300]


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


_OUT_OF_MEMORY = re.compile(
    r"can't allocate memory|not enough memory|Unable to allocate|tried to "
    r'allocate', re.IGNORECASE)


def _unreadable_message(path: str, size: int, error: Exception) -> str:
    cause = ' '.join(str(error).split()) or type(error).__name__
    if len(cause) > 300:
        cause = cause[:300] + '...'
    with open(path, 'rb') as f:
        head = f.read(4)
    fix = 'Copy or download the file again, or use another checkpoint.'
    if isinstance(error, MemoryError) or _OUT_OF_MEMORY.search(cause):
        what = ('it needs more memory than this machine has: a tensor or '
                'array in it declares that size (a crafted or corrupt file, '
                'or a checkpoint too large for this machine)')
        fix = ('Use another checkpoint, or load this one on a machine with '
               'more memory.')
    elif not head.startswith(b'PK\x03\x04'):
        what = ('it is not a torch checkpoint (no torch zip archive, no '
                'pickle stream), or a truncated legacy-format one')
    elif not zipfile.is_zipfile(path) or 'PytorchStreamReader' in cause:
        what = ('it is a torch zip archive that is truncated or corrupt (an '
                'interrupted save, copy or download)')
    else:
        what = ('it is a complete torch zip archive whose contents do not '
                'rebuild into tensors and containers (a crafted or corrupt '
                'file)')
    return (f'Cannot read checkpoint {path!r} ({size} bytes): {what}. '
            f'torch.load said: {type(error).__name__}: {cause}. {fix}')


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
