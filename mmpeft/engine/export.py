"""What a trained PEFT model is exported as, and how it is loaded back.

Two artefacts sit beside a training checkpoint (which stays unmerged and
resumable):

* the **deploy** checkpoint and config: :func:`mmpeft.merge_adapters` applied
  to a copy of the model (RepAdapter folded into qkv / fc1, Mona's conv branch
  fused, MiMi shrunk), and a config that builds exactly that model and loads
  that file. When no adapter is left, the config names the stock backbone and
  no longer needs mmpeft.
* the **adapter-only** checkpoint: the trainable tensors (adapters, and the
  neck / heads when the policy trains them) plus the metadata that rebuilds and
  checks them: method, ``adapter_cfg``, ``adapter_blocks`` (which blocks hold
  adapters), adapter widths, and the identity of the frozen base (the
  ``pretrained`` path and a SHA-256 of the frozen weights).
  One base model serves many such files; loading one on the wrong base, or
  into another method, is an error.

Pure functions: ``AdapterMergeHook``, ``AdapterLoadHook``,
``tools/merge_adapters.py`` and ``tools/test.py --adapter`` are thin callers.
"""
import copy
import hashlib
import inspect
import os
import os.path as osp
import tempfile
from collections import OrderedDict
from typing import Callable, Dict, Iterable, Mapping, Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.registry import HOOKS, MODELS, init_default_scope
from mmengine.runner import Runner
from mmengine.runner.checkpoint import weights_to_cpu
from torch import nn

from ..models.peft_backbone import (PEFTBackboneMixin, _preview,
                                    merge_adapters)
from .checkpoint_digest import replace_with_digest
from .checkpoint_io import DEPLOY_CONFIG_KEY, load_file, without_opt_ins
from .param_table import adapter_prefixes, unwrap_model

ADAPTER_META_KEY = 'mmpeft_adapters'
DEPLOY_META_KEY = 'mmpeft_deploy'
FORMAT_VERSION = 1


class AdapterCheckpointError(RuntimeError):
    """An adapter-only checkpoint does not fit the model or its base."""


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------
def companion_paths(checkpoint: str) -> Dict[str, str]:
    """The files written beside ``work_dir/iter_100.pth``: ``iter_100_deploy
    .pth``, ``iter_100_deploy.py`` and ``iter_100_adapters.pth``."""
    stem = osp.splitext(checkpoint)[0]
    return dict(deploy=f'{stem}_deploy.pth',
                deploy_config=f'{stem}_deploy.py',
                adapters=f'{stem}_adapters.pth')


def atomic_write(write: Callable[[str], None], path: str,
                 digest: bool = False) -> None:
    """``write(tmp)`` to a temporary file in the target's directory, then
    ``os.replace`` it: a reader never sees half a file, a crash leaves none.
    ``digest``: record its SHA-256 beside it (checkpoints; checked on load)."""
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    stem, ext = osp.splitext(osp.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f'.{stem}.',
                               suffix=f'.tmp{ext}',
                               dir=directory)
    os.close(fd)
    try:
        # mkstemp creates 0600; give the file the mode open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        write(tmp)
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())  # on disk before the name points at it
        if digest:
            replace_with_digest(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def save_atomic(obj, path: str) -> None:
    atomic_write(lambda tmp: torch.save(obj, tmp), path, digest=True)


def write_text_atomic(text: str, path: str) -> None:

    def write(tmp: str) -> None:
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(text)

    atomic_write(write, path)


def dump_config_atomic(cfg: Config, path: str) -> None:
    """The temp name keeps the ``.py`` suffix: ``Config.dump`` picks the
    format from it."""
    atomic_write(cfg.dump, path)


# --------------------------------------------------------------------------
# The model's PEFT backbone and its identity
# --------------------------------------------------------------------------
def find_peft_backbone(model: nn.Module) -> Tuple[str, PEFTBackboneMixin]:
    """``(name, module)`` of the PEFT backbone inside ``model``."""
    model = unwrap_model(model)
    for name, module in model.named_modules():
        if isinstance(module, PEFTBackboneMixin):
            return name, module
    raise TypeError(
        f'{type(model).__name__} has no mmpeft backbone (MonaSwinTransformer, '
        'RepAdapterViT, MiMiSwin, ...): there are no adapters to export or '
        'load. Set model.backbone.type to an mmpeft backbone.')


def adapter_widths(backbone: nn.Module):
    """The live width of every adapter if the backbone reports them (MiMi),
    else None: what the deploy model keeps. Recorded, not compared: the
    tensors' shapes are (a MiMi model keeps its shapes and masks neurons)."""
    widths = getattr(backbone, 'adapter_widths', None)
    widths = widths() if callable(widths) else widths
    return None if widths is None else plain_config(widths)


def method_meta(model: nn.Module) -> dict:
    """What identifies the adapters: backbone class, adapter_cfg, the
    blocks that hold them, widths."""
    _, backbone = find_peft_backbone(model)
    return dict(backbone_type=type(backbone).__name__,
                adapter_cfg=plain_config(backbone.adapter_cfg),
                adapter_blocks=plain_config(
                    getattr(backbone, 'adapter_blocks', None)),
                adapter_widths=adapter_widths(backbone))


def tensors_sha256(named_tensors: Iterable[Tuple[str, torch.Tensor]]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f'{name}|{tensor.dtype}|{tensor.numel()}\n'.encode())
        digest.update(tensor.view(torch.uint8).numpy())
    return digest.hexdigest()


def adapter_state_dict(model: nn.Module) -> 'OrderedDict[str, torch.Tensor]':
    """Everything a fine-tuning run changed: the trainable parameters, the
    buffers of adapters (MiMi masks) and the buffers of modules with a
    trainable parameter of their own (BatchNorm statistics of a head)."""
    model = unwrap_model(model)
    adapters = adapter_prefixes(model)
    keys = set()
    for module_name, module in model.named_modules():
        prefix = f'{module_name}.' if module_name else ''
        own = list(module.named_parameters(recurse=False))
        keys.update(prefix + name for name, param in own
                    if param.requires_grad)
        if prefix.startswith(adapters) or any(p.requires_grad for _, p in own):
            keys.update(prefix + name
                        for name, _ in module.named_buffers(recurse=False))
    return OrderedDict((key, value.detach())
                       for key, value in model.state_dict().items()
                       if key in keys)


def base_identity(model: nn.Module, adapter_keys: Iterable[str]) -> dict:
    """The frozen base the adapters need: every parameter not in the adapter
    file. Its hash is what a base checkpoint must reproduce."""
    model = unwrap_model(model)
    adapter_keys = set(adapter_keys)
    frozen = [(name, param) for name, param in model.named_parameters()
              if name not in adapter_keys]
    _, backbone = find_peft_backbone(model)
    return dict(pretrained=backbone._pretrained_path(),
                frozen_sha256=tensors_sha256(frozen),
                frozen_keys=sorted(name for name, _ in frozen),
                frozen_params=sum(param.numel() for _, param in frozen))


def adapter_checkpoint(model: nn.Module,
                       base: Optional[dict] = None,
                       meta: Optional[dict] = None) -> dict:
    """The adapter-only checkpoint of ``model`` as a dict ready to save.

    ``base`` is :func:`base_identity` when the caller cached it (the frozen
    weights never change during a run, hashing them once is enough)."""
    state = weights_to_cpu(adapter_state_dict(model))
    if not state:
        raise ValueError('Nothing in the model is trainable: there is no '
                         'adapter-only checkpoint to write.')
    info = dict(format_version=FORMAT_VERSION,
                **method_meta(model),
                base=base or base_identity(model, state))
    meta = dict(meta or {}, **{ADAPTER_META_KEY: info})
    return dict(meta=meta, state_dict=state)


# --------------------------------------------------------------------------
# Loading an adapter-only checkpoint on top of a base
# --------------------------------------------------------------------------
def read_adapter_checkpoint(path: str) -> dict:
    """The adapter-only file at ``path``, read safely; errors name it."""
    checkpoint = load_file(path)
    if not isinstance(checkpoint, dict) or ADAPTER_META_KEY not in (
            checkpoint.get('meta') or {}):
        raise AdapterCheckpointError(
            f'{path} is not an mmpeft adapter-only checkpoint (its meta has '
            f'no {ADAPTER_META_KEY!r}). Pass a `*_adapters.pth` written by '
            'AdapterMergeHook or tools/merge_adapters.py --adapters; a full '
            'checkpoint is loaded as the base checkpoint instead.')
    return checkpoint


def check_adapter_checkpoint(model: nn.Module,
                             adapters: dict,
                             base_state: Mapping[str, torch.Tensor],
                             source: str = 'the adapter checkpoint') -> None:
    """Raise :class:`AdapterCheckpointError` unless ``adapters`` (as read by
    :func:`read_adapter_checkpoint`) fits ``model`` and ``base_state`` holds
    the exact frozen weights the adapters were trained on."""
    model = unwrap_model(model)
    info = adapters['meta'][ADAPTER_META_KEY]
    state = adapters['state_dict']

    ours = method_meta(model)
    for key, what in (('backbone_type', 'method (backbone type)'),
                      ('adapter_cfg', 'adapter_cfg'),
                      ('adapter_blocks', 'adapters in the blocks')):
        if info.get(key) != ours[key]:
            raise AdapterCheckpointError(
                f'{source} was trained with {what} {info.get(key)!r}, but the '
                f'config builds {ours[key]!r}. Use the config the adapters '
                'were trained with (the deploy / training config written '
                'beside them).')

    model_state = model.state_dict()
    unknown = sorted(k for k in state if k not in model_state)
    wrong = sorted(f'{k}: file {tuple(v.shape)} vs model '
                   f'{tuple(model_state[k].shape)}' for k, v in state.items()
                   if k in model_state and v.shape != model_state[k].shape)
    if unknown or wrong:
        raise AdapterCheckpointError(
            f'{source} does not fit the model: {len(unknown)} keys unknown to '
            f'it ({_preview(unknown)}), {len(wrong)} of another shape, e.g. '
            f'other adapter widths ({_preview(wrong)}). Use the config the '
            'adapters were trained with.')

    params = dict(model.named_parameters())
    frozen = sorted(name for name in params if name not in state)
    if frozen != info['base']['frozen_keys']:
        extra = sorted(set(frozen) - set(info['base']['frozen_keys']))
        gone = sorted(set(info['base']['frozen_keys']) - set(frozen))
        raise AdapterCheckpointError(
            f'{source} was trained on a model with other frozen weights: '
            f'{len(extra)} here but not there ({_preview(extra)}), '
            f'{len(gone)} there but not here ({_preview(gone)}). Use the '
            'config the adapters were trained with.')
    missing = [name for name in frozen if name not in base_state]
    if missing:
        raise AdapterCheckpointError(
            f'The base checkpoint lacks {len(missing)} of the {len(frozen)} '
            f'frozen weights the adapters need ({_preview(missing)}). Load '
            'the full base checkpoint the adapters were trained on '
            f'(pretrained backbone: {info["base"]["pretrained"]!r}) in the '
            'model layout.')
    digest = tensors_sha256(
        (name, base_state[name].to(params[name].dtype)) for name in frozen)
    if digest != info['base']['frozen_sha256']:
        raise AdapterCheckpointError(
            f'Wrong base checkpoint for {source}: its frozen weights hash to '
            f'{digest[:16]}..., the adapters were trained on '
            f'{info["base"]["frozen_sha256"][:16]}... (pretrained backbone '
            f'{info["base"]["pretrained"]!r}). Adapters only work on the '
            'exact weights they were trained with: load that base checkpoint.')


def apply_adapter_checkpoint(model: nn.Module, checkpoint: dict,
                             adapter_path: str) -> dict:
    """Check the adapter file at ``adapter_path`` against the base weights in
    ``checkpoint`` (a loaded full checkpoint, before it goes into the model)
    and put the adapter tensors into it. Returns the adapter file's info."""
    adapters = read_adapter_checkpoint(adapter_path)
    state = checkpoint.get('state_dict', checkpoint)
    base = {_strip_wrapper_prefix(k): v for k, v in state.items()}
    check_adapter_checkpoint(model, adapters, base, source=adapter_path)
    for key in list(state):
        if _strip_wrapper_prefix(key) in adapters['state_dict']:
            del state[key]
    state.update(adapters['state_dict'])
    return adapters['meta'][ADAPTER_META_KEY]


def load_adapter_checkpoint(model: nn.Module, path: str) -> dict:
    """Load the adapter file at ``path`` into ``model``, whose base weights
    must already be loaded. Returns the adapter file's info."""
    model = unwrap_model(model)
    adapters = read_adapter_checkpoint(path)
    check_adapter_checkpoint(model,
                             adapters,
                             dict(model.named_parameters()),
                             source=path)
    model.load_state_dict(adapters['state_dict'], strict=False)
    return adapters['meta'][ADAPTER_META_KEY]


# --------------------------------------------------------------------------
# Deploy checkpoint and config
# --------------------------------------------------------------------------
def deploy_model(model: nn.Module) -> nn.Module:
    """A merged copy of ``model``; ``model`` itself is left as it is."""
    return merge_adapters(copy.deepcopy(unwrap_model(model)))


def backbone_deploy_cfg(merged: PEFTBackboneMixin, backbone_cfg: dict) -> dict:
    """The backbone config that builds ``merged`` (a merged PEFT backbone).

    A backbone with no adapter left is its stock host class (RepAdapterViT
    -> mmseg ``VisionTransformer``); otherwise the backbone says which
    arguments rebuild its deploy form (``deploy_backbone_cfg()``: the
    remaining adapters with their deploy configs, MiMi's shrunk widths).
    The pretrained ``init_cfg`` is dropped: the deploy checkpoint holds every
    weight.
    """
    cfg = plain_config(backbone_cfg)
    init_cfg = cfg.get('init_cfg')
    pretrained = ('Pretrained', 'Pretrained_Part')
    if isinstance(init_cfg, dict) and init_cfg.get('type') in pretrained:
        cfg.pop('init_cfg')
    if cfg.get('pretrained') is not None:  # mmseg's older spelling
        cfg['pretrained'] = None
    if not any(True for _ in merged.named_adapters()):
        host = _stock_host(type(merged))  # with the arguments it takes
        accepted = inspect.signature(host).parameters
        cfg = {k: v for k, v in cfg.items() if k == 'type' or k in accepted}
        cfg['type'] = f'{host.__module__.split(".")[0]}.{host.__name__}'
        return cfg
    cfg.update(plain_config(merged.deploy_backbone_cfg()))
    return cfg


def deploy_config(cfg: Config, merged: nn.Module, checkpoint: str) -> Config:
    """``cfg`` changed to build ``merged`` and load it from ``checkpoint``.

    mmpeft's training hooks are dropped, and so is ``import mmpeft`` when
    nothing in the config needs it any more. ``adapters_merged = True``
    marks it, so that ``tools/test.py`` refuses training checkpoints under
    it. Opt-ins (``mmpeft_allow_pickle`` ...) are left out: they were given
    to the training run, not to whoever evaluates the deploy files."""
    name, backbone = find_peft_backbone(merged)
    plain = without_opt_ins(cfg.to_dict())
    parent = plain['model']
    *path, leaf = name.split('.')
    for part in path:
        parent = parent[part]
    parent[leaf] = backbone_deploy_cfg(backbone, parent[leaf])

    mmpeft_types = _mmpeft_type_names()
    hooks = [
        h for h in plain.get('custom_hooks', [])
        if not _is_mmpeft_type(h.get('type'), mmpeft_types)
    ]
    if 'custom_hooks' in plain:
        plain['custom_hooks'] = hooks
    imports = plain.get('custom_imports', {}).get('imports', [])
    imports = [imports] if isinstance(imports, str) else imports
    built = {k: v for k, v in plain.items() if k in _RUNNER_KEYS}
    if not _uses_mmpeft(built, mmpeft_types):
        imports = [m for m in imports if m.split('.')[0] != 'mmpeft']
        if imports:
            plain['custom_imports']['imports'] = imports
        else:
            plain.pop('custom_imports', None)
    plain['load_from'] = osp.abspath(checkpoint)
    plain['resume'] = False
    plain[DEPLOY_CONFIG_KEY] = True
    return Config(plain)


def write_deploy(model: nn.Module,
                 cfg: Optional[Config],
                 checkpoint: str,
                 config: Optional[str],
                 meta: Optional[dict] = None) -> nn.Module:
    """Write the deploy checkpoint (and, given ``cfg`` and ``config``, the
    deploy config) for ``model``; returns the merged copy. ``meta`` goes
    into the checkpoint's meta (e.g. ``dataset_meta``)."""
    merged = deploy_model(model)
    _, backbone = find_peft_backbone(model)
    info = dict(trained_backbone_type=type(backbone).__name__)
    meta = dict(meta or {}, **{DEPLOY_META_KEY: info})
    save_atomic(
        dict(meta=meta, state_dict=weights_to_cpu(merged.state_dict())),
        checkpoint)
    if cfg is not None and config is not None:
        dump_config_atomic(deploy_config(cfg, merged, checkpoint), config)
    return merged


def build_from_config(cfg: Config) -> nn.Module:
    """Build ``cfg.model`` in the config's own registry scope."""
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    return MODELS.build(cfg.model)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def plain_config(value):
    """ConfigDicts and tuples -> dicts and lists (stable, JSON-like)."""
    if isinstance(value, Mapping):
        return {k: plain_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_config(v) for v in value]
    return value


def _stock_host(cls: type) -> type:
    """The first stock (non-mmpeft) class a PEFT backbone derives from."""
    for base in cls.__mro__[1:]:
        if not base.__module__.startswith('mmpeft') and issubclass(
                base, nn.Module):
            return base
    raise TypeError(f'{cls.__name__} derives from no stock backbone.')


# Config keys the runner builds from; other top-level keys are variables
# (e.g. a neck dict kept for configs that inherit) and never built.
_RUNNER_KEYS = set(inspect.signature(Runner.__init__).parameters) | {
    'model_wrapper_cfg', 'runner_type'
}


def _mmpeft_type_names() -> set:
    return {
        name
        for registry in (MODELS, HOOKS)
        for name, cls in registry.module_dict.items()
        if cls.__module__.startswith('mmpeft')
    }


def _is_mmpeft_type(type_, mmpeft_types: set) -> bool:
    if isinstance(type_, str):
        return type_.split('.')[-1] in mmpeft_types
    return getattr(type_, '__module__', '').startswith('mmpeft')


def _uses_mmpeft(node, mmpeft_types: set) -> bool:
    if isinstance(node, Mapping):
        return _is_mmpeft_type(node.get('type'), mmpeft_types) or any(
            _uses_mmpeft(v, mmpeft_types) for v in node.values())
    if isinstance(node, (list, tuple)):
        return any(_uses_mmpeft(v, mmpeft_types) for v in node)
    return False


def _strip_wrapper_prefix(key: str) -> str:
    return key[len('module.'):] if key.startswith('module.') else key
