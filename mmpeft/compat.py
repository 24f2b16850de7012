"""Workarounds for upstream bugs. This is the only module that patches third-party code.

Each shim names the upstream bug it works around; ``apply()`` is idempotent and
runs on ``import mmpeft`` before anything imports the affected package.
Workarounds that are calls rather than patches (``packed_self_attention``)
are used by the mmpeft modules that need them.
"""
import collections
import collections.abc
import functools
import os
import os.path as osp
import sys
import uuid


def _alias_collections_abc() -> None:
    """mmrotate 1.0.0rc1 does ``from collections import Sequence``.

    The ABC aliases were removed from ``collections`` in Python 3.10; mmrotate
    1.0.0rc1 still imports one in ``mmrotate/models/detectors/
    refine_single_stage.py``, so ``import mmrotate.models`` fails without this.
    """
    if not hasattr(collections, 'Sequence'):
        collections.Sequence = collections.abc.Sequence


def _atomic_local_checkpoint_save() -> None:
    """mmengine 0.10.7 writes checkpoints in place: ``save_checkpoint`` in
    ``mmengine/runner/checkpoint.py`` pickles into memory, then
    ``LocalBackend.put`` does ``open(filename, 'wb').write(...)``. A crash,
    a kill or a full disk during that write leaves a truncated file under the
    final name (and overwriting ``latest.pth`` destroys the previous one).

    Wrap it so that local files are written to a temporary file in the same
    directory, flushed to disk and renamed over the final name (``os.replace``
    is atomic): the final name always holds a complete checkpoint, the old one
    until the new one is complete. Other backends (``pavi://``, object
    stores, ``backend_args``) keep mmengine's own path. ``mmengine.runner``
    and ``mmengine.runner.runner`` import ``save_checkpoint`` by name, so every
    loaded mmengine module holding the original is rebound too (modules that
    import it later get the wrapper from ``mmengine.runner.checkpoint``).
    """
    import torch
    from mmengine.fileio import LocalBackend, get_file_backend
    from mmengine.runner import checkpoint as checkpoint_module

    original = checkpoint_module.save_checkpoint
    if getattr(original, 'mmpeft_atomic', False):
        return

    @functools.wraps(original)
    def save_checkpoint(checkpoint, filename, file_client_args=None,
                        backend_args=None):
        filename = str(filename)
        if file_client_args is not None or filename.startswith(
                'pavi://') or not isinstance(
                    get_file_backend(filename, backend_args=backend_args),
                    LocalBackend):
            return original(checkpoint, filename, file_client_args,
                            backend_args)
        directory, name = osp.split(osp.abspath(filename))
        os.makedirs(directory, exist_ok=True)
        tmp = osp.join(directory,
                       f'.{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
        try:
            with open(tmp, 'xb') as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filename)
        except BaseException:
            if osp.exists(tmp):
                os.remove(tmp)
            raise

    save_checkpoint.mmpeft_atomic = True
    for name, module in list(sys.modules.items()):
        if (name.split('.')[0] == 'mmengine'
                and getattr(module, 'save_checkpoint', None) is original):
            module.save_checkpoint = save_checkpoint


def _load_local_checkpoints_as_pickles() -> None:
    """mmengine 0.10.7 loads local checkpoints with a bare ``torch.load``
    (``load_from_local`` in ``mmengine/runner/checkpoint.py``). Since torch
    2.6 that means ``weights_only=True``, which refuses mmengine's own
    training checkpoints: their ``message_hub`` holds ``HistoryBuffer``s and
    numpy arrays, whose dtypes unpickle through ``builtins.getattr`` (not
    safely allow-listable). ``--resume`` and ``load_from`` fail.

    Re-register mmengine's local loader with ``weights_only=False``, the
    behaviour mmengine was written for (torch < 2.6). Only local files read
    through mmengine's ``CheckpointLoader`` are affected; as with any mmengine
    release, load only checkpoints you trust.
    """
    import torch
    from mmengine.runner import checkpoint as checkpoint_module

    original = checkpoint_module.CheckpointLoader._schemes['']
    if getattr(original, 'mmpeft_pickles', False):
        return

    @functools.wraps(original)
    def load_from_local(filename, map_location):
        filename = osp.expanduser(filename)
        if not osp.isfile(filename):
            raise FileNotFoundError(f'{filename} can not be found.')
        return torch.load(
            filename, map_location=map_location, weights_only=False)

    load_from_local.mmpeft_pickles = True
    checkpoint_module.CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local, force=True)


def _summarise_frozen_params_left_out_of_optimizer() -> None:
    """mmengine 0.10.7's ``DefaultOptimWrapperConstructor.add_params``
    (``mmengine/optim/optimizer/default_constructor.py``) logs one WARNING,
    ``<name> is skipped since its requires_grad=False``, for every frozen
    parameter whenever a ``paramwise_cfg`` is set, as in every mmpeft config:
    several hundred lines for a frozen Swin-B, which bury real warnings.
    Leaving frozen weights out of the optimizer is what a PEFT run wants.

    Wrap the constructor's ``__call__`` (subclasses that only override
    ``add_params`` go through it too) so that exactly those records are
    dropped while it builds the optimizer, and one INFO line counts them.
    The optimizer and every other message are unchanged.
    """
    import logging

    from mmengine.logging import MMLogger, print_log
    from mmengine.optim import DefaultOptimWrapperConstructor

    original = DefaultOptimWrapperConstructor.__call__
    if getattr(original, 'mmpeft_summarised', False):
        return
    skipped_suffix = ' is skipped since its requires_grad=False'

    class CountFrozenSkips(logging.Filter):

        def __init__(self):
            super().__init__()
            self.count = 0

        def filter(self, record):
            if record.getMessage().endswith(skipped_suffix):
                self.count += 1
                return False
            return True

    @functools.wraps(original)
    def build_optim_wrapper(self, model):
        logger = MMLogger.get_current_instance()  # print_log's 'current'
        skipped = CountFrozenSkips()
        logger.addFilter(skipped)
        try:
            optim_wrapper = original(self, model)
        finally:
            logger.removeFilter(skipped)
        if skipped.count:
            print_log(
                f'{skipped.count} frozen parameters (requires_grad=False) '
                'left out of the optimizer.',
                logger='current')
        return optim_wrapper

    build_optim_wrapper.mmpeft_summarised = True
    DefaultOptimWrapperConstructor.__call__ = build_optim_wrapper


def packed_self_attention(attn, x):
    """The attention output of mmcv's ``MultiheadAttention`` ``attn`` used as
    self-attention on ``x`` (before its ``proj_drop``, drop-path and
    residual), with one contiguous tensor as query, key and value.

    For ``batch_first`` mmcv (``mmcv/cnn/bricks/transformer.py``) transposes
    query, key and value separately, so ``nn.MultiheadAttention`` sees three
    distinct non-contiguous tensors: it skips its packed in-projection and
    runs three linears on strided inputs. ATen folds such an input into one
    GEMM only when the weight requires grad; for frozen weights it runs a
    batched GEMM, ~20% slower training and ~30% slower inference of a ViT-S
    attention on CPU (docs/benchmarks.md). Same maths as the stock call; the
    in-projection is one GEMM instead of three, so results agree to float
    rounding.
    """
    if not attn.batch_first:
        return attn.attn(x, x, x)[0]
    tokens = x.transpose(0, 1).contiguous()
    return attn.attn(tokens, tokens, tokens)[0].transpose(0, 1)


def apply() -> None:
    _alias_collections_abc()
    _atomic_local_checkpoint_save()
    _load_local_checkpoints_as_pickles()
    _summarise_frozen_params_left_out_of_optimizer()
