"""Workarounds for upstream bugs. This is the only module that patches third-party code.

Each shim names the upstream bug it works around; ``apply()`` is idempotent and
runs on ``import mmpeft`` before anything imports the affected package.
Workarounds that are calls rather than patches (``packed_self_attention``)
are used by the mmpeft modules that need them.
"""
import collections
import collections.abc
import contextlib
import enum
import functools
import importlib
import os
import os.path as osp
import sys
import types
import uuid
from typing import Dict, Iterator, Optional


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
    until the new one is complete. Beside it goes its SHA-256
    (:mod:`mmpeft.engine.checkpoint_digest`, checked on load), and the digests
    of checkpoints mmengine removed (``max_keep_ckpts``) go. Other backends
    (``pavi://``, object stores, ``backend_args``) keep mmengine's own path. ``mmengine.runner``
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
        from mmpeft.engine.checkpoint_digest import (remove_orphan_digests,
                                                     replace_with_digest)
        directory, name = osp.split(osp.abspath(filename))
        os.makedirs(directory, exist_ok=True)
        tmp = osp.join(directory,
                       f'.{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
        try:
            with open(tmp, 'xb') as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            replace_with_digest(tmp, filename)
            remove_orphan_digests(directory)
        except BaseException:
            if osp.exists(tmp):
                os.remove(tmp)
            raise

    save_checkpoint.mmpeft_atomic = True
    for name, module in list(sys.modules.items()):
        if (name.split('.')[0] == 'mmengine'
                and getattr(module, 'save_checkpoint', None) is original):
            module.save_checkpoint = save_checkpoint


def _load_local_checkpoints_safely() -> None:
    """mmengine 0.10.7 loads local checkpoints with a bare ``torch.load``
    (``load_from_local`` in ``mmengine/runner/checkpoint.py``). Since torch
    2.6 that means ``weights_only=True``, which refuses mmengine's own
    training checkpoints (their ``message_hub`` holds ``HistoryBuffer``s and
    numpy arrays), so ``--resume`` and ``load_from`` fail; and a missing,
    empty or truncated file ends in a raw torch error that does not name it.

    Re-register mmengine's local loader as
    :func:`mmpeft.engine.checkpoint_io.load_file`: still ``weights_only=True``,
    with exactly the types mmengine's checkpoints need allow-listed for that
    call (never process-wide), errors naming the file, and full pickles only
    with the explicit opt-in (``--allow-pickle``, ``mmpeft_allow_pickle``).
    Remote schemes keep mmengine's loaders (a bare ``torch.load``, i.e.
    ``weights_only=True``).
    """
    from mmengine.runner import checkpoint as checkpoint_module

    original = checkpoint_module.CheckpointLoader._schemes['']
    if getattr(original, 'mmpeft_safe', False):
        return

    @functools.wraps(original)
    def load_from_local(filename, map_location):
        from mmpeft.engine.checkpoint_io import load_file
        return load_file(filename, map_location=map_location)

    load_from_local.mmpeft_safe = True
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


def _cpu_distributed_without_cuda() -> None:
    """mmengine 0.10.7 cannot run ``--launcher pytorch`` on a machine
    without CUDA: ``_init_dist_pytorch`` in ``mmengine/dist/utils.py`` calls
    ``torch.cuda.set_device(local_rank)`` unconditionally and initialises
    the configured backend (``nccl`` in every stock runtime config), and
    ``Runner.wrap_model`` (``mmengine/runner/runner.py``) passes
    ``device_ids=[LOCAL_RANK]`` to ``MMDistributedDataParallel``, which
    torch's DDP refuses for a CPU module. ``tools/dist_train.sh CONFIG 2``
    fails on a CPU-only machine.

    When CUDA is not available (only then): skip ``set_device``, use
    ``gloo`` instead of ``nccl``, and drop ``device_ids`` / ``output_device``
    for a module whose parameters are all on the CPU. GPU runs are unchanged.
    """
    import torch
    from mmengine.dist import utils as dist_utils
    from mmengine.model import MMDistributedDataParallel

    original_init = dist_utils._init_dist_pytorch
    if not getattr(original_init, 'mmpeft_cpu', False):

        @functools.wraps(original_init)
        def _init_dist_pytorch(backend, init_backend='torch', **kwargs):
            if torch.cuda.is_available() or init_backend != 'torch':
                return original_init(backend, init_backend, **kwargs)
            if backend == 'nccl':
                backend = 'gloo'
            torch.distributed.init_process_group(backend=backend, **kwargs)

        _init_dist_pytorch.mmpeft_cpu = True
        dist_utils._init_dist_pytorch = _init_dist_pytorch

    original_ddp = MMDistributedDataParallel.__init__
    if not getattr(original_ddp, 'mmpeft_cpu', False):

        @functools.wraps(original_ddp)
        def __init__(self, module, detect_anomalous_params=False, **kwargs):
            if not torch.cuda.is_available() and all(
                    p.device.type == 'cpu' for p in module.parameters()):
                kwargs.pop('device_ids', None)
                kwargs.pop('output_device', None)
            original_ddp(self, module, detect_anomalous_params, **kwargs)

        __init__.mmpeft_cpu = True
        MMDistributedDataParallel.__init__ = __init__


_DOTA_METRIC = 'mmrotate.evaluation.metrics.dota_metric'


def _dota_metric_nproc() -> None:
    """mmrotate 1.0.0rc1's ``DOTAMetric.compute_metrics``
    (``mmrotate/evaluation/metrics/dota_metric.py``) calls ``eval_rbbox_map``
    without ``nproc``, whose default spawns a pool of 4 processes
    (``mmrotate/evaluation/functional/mean_ap.py``) at every evaluation,
    however many CPUs or dataloader workers the config has.

    Give ``DOTAMetric`` an ``nproc`` argument (the DOTA dataset config sets it
    to its ``num_workers``; default: 4 capped at the CPU count) and pass it
    on. ``mmrotate`` is never imported here: the patch is applied when
    mmrotate loads ``dota_metric`` (or now, if it already has), so
    ``import mmpeft`` works without mmrotate and costs nothing for others.
    """
    module = sys.modules.get(_DOTA_METRIC)
    if module is not None:
        _patch_dota_metric(module)
    else:
        _OnImport.install('dota_metric', lambda name: name == _DOTA_METRIC,
                          _exec_and_patch_dota_metric)


def _exec_and_patch_dota_metric(exec_module, module) -> None:
    exec_module(module)
    _patch_dota_metric(module)


class _OnImport:
    """Meta-path finder: the modules whose name ``matches`` run as
    ``around(exec_module, module)`` when they are first imported (the
    finder that would load them without us still finds them)."""

    def __init__(self, key: str, matches, around):
        self.key, self.matches, self.around = key, matches, around

    @classmethod
    def install(cls, key: str, matches, around) -> None:
        if not any(isinstance(f, cls) and f.key == key
                   for f in sys.meta_path):
            sys.meta_path.insert(0, cls(key, matches, around))

    def find_spec(self, name, path=None, target=None):
        if not self.matches(name):
            return None
        spec = None
        for finder in sys.meta_path:  # whoever would load it without us
            if finder is not self and hasattr(finder, 'find_spec'):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
        if spec is None or not hasattr(spec.loader, 'exec_module'):
            return spec
        exec_module, around = spec.loader.exec_module, self.around
        spec.loader.exec_module = functools.partial(around, exec_module)
        return spec


def _patch_dota_metric(module) -> None:
    metric = module.DOTAMetric
    if getattr(metric.__init__, 'mmpeft_nproc', False):
        return
    original_init = metric.__init__
    eval_rbbox_map = module.eval_rbbox_map

    @functools.wraps(original_init)
    def __init__(self, *args, nproc=None, **kwargs):
        original_init(self, *args, **kwargs)
        self.nproc = min(4, os.cpu_count() or 1) if nproc is None else nproc
        if self.nproc < 1:
            raise ValueError(f'DOTAMetric nproc must be >= 1, got {nproc}: '
                             'set val_evaluator.nproc to a positive count.')

    @functools.wraps(eval_rbbox_map)
    def eval_with_nproc(*args, **kwargs):
        kwargs.setdefault('nproc', eval_with_nproc.nproc)
        return eval_rbbox_map(*args, **kwargs)

    eval_with_nproc.nproc = 4  # mmrotate's default for callers other than us
    original_compute = metric.compute_metrics

    @functools.wraps(original_compute)
    def compute_metrics(self, results):
        eval_with_nproc.nproc = self.nproc
        return original_compute(self, results)

    __init__.mmpeft_nproc = True
    metric.__init__ = __init__
    metric.compute_metrics = compute_metrics
    module.eval_rbbox_map = eval_with_nproc


def _roi_align_reads_contiguous_maps() -> None:
    """mmcv 2.x's ``RoIAlignFunction.forward`` (``mmcv/ops/roi_align.py``)
    and ``RoIAlignRotatedFunction.forward`` (``roi_align_rotated.py``) pass
    the feature map to their kernels without ``.contiguous()`` (only the
    backward makes its gradient contiguous), and the kernels index it as a
    contiguous NCHW array. A channels-last map gives wrong RoI features, and
    that is what a detector gets from a ViT whose output is the permuted
    (B, H, W, C) tokens, as mmpretrain's ``VisionTransformer`` returns them:
    convolutions keep the memory format, so the FPN levels are channels-last.
    A Faster R-CNN with such a backbone then barely learns (mmpeft's demo:
    COCO bbox mAP 0.004 after 100 iterations, 0.511 with the map made
    contiguous).

    Make the map contiguous before the kernel (a no-op for NCHW maps; the
    backward's gradient is laid out as NCHW, as autograd expects).
    """
    try:  # the modules (mmcv.ops exports functions of the same names)
        roi_align = importlib.import_module('mmcv.ops.roi_align')
        rotated = importlib.import_module('mmcv.ops.roi_align_rotated')
    except ImportError:  # mmcv without ops: RoIAlign is unusable anyway
        return
    for function in (roi_align.RoIAlignFunction,
                     rotated.RoIAlignRotatedFunction):
        original = function.forward
        if getattr(original, 'mmpeft_contiguous', False):
            continue

        def forward(ctx, input, *args, _original=original, **kwargs):
            return _original(ctx, input.contiguous(), *args, **kwargs)

        functools.update_wrapper(forward, original)
        forward.mmpeft_contiguous = True
        function.forward = staticmethod(forward)


class TorchvisionUnavailableError(ImportError):
    """A torchvision function was called where torchvision does not import."""


_torchvision_problem: list = []  # [None] if torchvision imports, else [why]


def torchvision_problem() -> Optional[str]:
    """``None`` if ``import torchvision`` works, else why not (tried once;
    what a failed attempt left in ``sys.modules`` is removed)."""
    if not _torchvision_problem:
        before = set(sys.modules)
        try:
            import torchvision  # noqa: F401
            _torchvision_problem.append(None)
        except Exception as e:  # a wheel built for another torch: RuntimeError
            for name in set(sys.modules) - before:
                if name.split('.')[0] == 'torchvision':
                    del sys.modules[name]
            _torchvision_problem.append(
                f'{type(e).__name__}: {e}'.splitlines()[0])
    return _torchvision_problem[0]


def _torchvision_stand_ins(problem: str) -> Dict[str, types.ModuleType]:
    """Modules named like torchvision's that hold what mmpretrain 1.2.0
    touches at import time: ``transforms.RandomResizedCrop`` (subclassed),
    ``transforms.transforms.InterpolationMode`` (read), the ``functional`` and
    ``ops.boxes`` modules (imported); any other attribute, and every call or
    instance, raises :class:`TorchvisionUnavailableError` naming the fix."""
    import torch

    def error(name: str) -> TorchvisionUnavailableError:
        return TorchvisionUnavailableError(
            f'torchvision.{name} is unavailable: importing torchvision '
            f'failed ({problem}). mmpeft gave mmpretrain stand-ins for the '
            'torchvision names it reads at import time, so that its '
            'backbones work without it; this call needs the real package. '
            'Install the torchvision build that matches torch '
            f'{torch.__version__} (pytorch.org/get-started/previous-versions).')

    def unavailable(name: str):

        def call(*args, **kwargs):
            raise error(name)

        call.__name__ = call.__qualname__ = name.rsplit('.', 1)[-1]
        return call

    def module(name: str, **attrs) -> types.ModuleType:
        stand_in = types.ModuleType(f'torchvision{name}')
        stand_in.__dict__.update(attrs, mmpeft_stand_in=problem)

        def __getattr__(attr):
            if attr.startswith('__'):
                raise AttributeError(attr)
            return unavailable(f'{name.lstrip(".")}.{attr}'.lstrip('.'))

        stand_in.__getattr__ = __getattr__
        return stand_in

    class RandomResizedCrop:

        def __init__(self, *args, **kwargs):
            raise error('transforms.RandomResizedCrop')

    interpolation = enum.Enum('InterpolationMode', [
        ('NEAREST', 'nearest'), ('NEAREST_EXACT', 'nearest-exact'),
        ('BILINEAR', 'bilinear'), ('BICUBIC', 'bicubic'), ('BOX', 'box'),
        ('HAMMING', 'hamming'), ('LANCZOS', 'lanczos')])
    functional = module('.transforms.functional')
    classes = module('.transforms.transforms',
                     RandomResizedCrop=RandomResizedCrop,
                     InterpolationMode=interpolation)
    transforms = module('.transforms', functional=functional,
                        transforms=classes,
                        RandomResizedCrop=RandomResizedCrop,
                        InterpolationMode=interpolation)
    boxes = module('.ops.boxes')
    ops = module('.ops', boxes=boxes)
    root = module('', transforms=transforms, ops=ops)
    return {m.__name__: m for m in (root, transforms, functional, classes,
                                    ops, boxes)}


@contextlib.contextmanager
def _torchvision_stand_in() -> Iterator[None]:
    """Stand-ins as ``torchvision`` in ``sys.modules`` while the block runs,
    if torchvision does not import (and none are there yet)."""
    problem = torchvision_problem()
    if problem is None or 'torchvision' in sys.modules:
        yield
        return
    stand_ins = _torchvision_stand_ins(problem)
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]


def _exec_with_torchvision_stand_in(exec_module, module) -> None:
    with _torchvision_stand_in():
        exec_module(module)


def _mmpretrain_without_torchvision() -> None:
    """mmpretrain 1.2.0 imports torchvision at import time
    (``datasets/transforms/processing.py`` and ``formatting.py``,
    ``models/utils/box_utils.py``, ``evaluation/metrics/
    visual_grounding_eval.py``; ``import mmpretrain`` runs them all), although
    its backbones never call it. Where no torchvision works with the
    installed torch (none is built for every CPU torch; a wheel for another
    torch fails with "operator torchvision::nms does not exist"), mmpretrain
    does not import at all.

    While a module of mmpretrain runs its import, and only if ``import
    torchvision`` fails, ``sys.modules`` holds stand-ins with the names those
    files read at import time (:func:`_torchvision_stand_ins`); calling any of
    them raises :class:`TorchvisionUnavailableError`. They are removed again
    afterwards, so nothing else ever sees them, and a torchvision that imports
    is never touched.
    """
    _OnImport.install(
        'mmpretrain_torchvision',
        lambda name: name.split('.')[0] == 'mmpretrain',
        _exec_with_torchvision_stand_in)


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
    _load_local_checkpoints_safely()
    _summarise_frozen_params_left_out_of_optimizer()
    _cpu_distributed_without_cuda()
    _dota_metric_nproc()
    _mmpretrain_without_torchvision()
    _roi_align_reads_contiguous_maps()
