"""Which config each method of a comparison runs: the demo's, the shipped
task config of a baseline, or one generated from a user's baseline and the
method's config base."""
import os
import os.path as osp
import pprint
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from ..methods import HOST_TYPES, METHODS, POLICY_METHODS

# The repository root: tools/ and configs/ are found from it.
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# Table order: the Mona paper's Table 1, then the methods mmpeft adds.
LABELS = {
    'full': 'Full', 'fixed': 'Fixed', 'bitfit': 'BitFit',
    'normtuning': 'NormTuning', 'partial1': 'Partial-1',
    'adapter': 'Adapter', 'lora': 'LoRA', 'adaptformer': 'AdaptFormer',
    'lorand': 'LoRand', 'mona': 'Mona', 'repadapter': 'RepAdapter',
    'mimi': 'MiMi'
}
ALL_METHODS = tuple(LABELS)

DEMO_DIR = 'configs/demo'
# Step 1 of the demo per host: its config and its (default) work dir; the
# file the demo configs load is `<host>_pretrained` in DEMO_BASE.
DEMO_BASE = 'configs/demo/_base_/tiny_swin.py'
DEMO_PRETRAIN = {
    'swin': ('configs/demo/swin_fasterrcnn_coco.py',
             'work_dirs/swin_fasterrcnn_coco'),
    'vit': ('configs/demo/vit_fasterrcnn_coco.py',
            'work_dirs/vit_fasterrcnn_coco'),
}
DEMO_CONFIGS = {
    'full_swin': 'configs/demo/swin_fasterrcnn_voc.py',
    'full_vit': 'configs/demo/vit_fasterrcnn_voc.py',
    'mona': 'configs/demo/mona_fasterrcnn_voc.py',
}

# MiMi goes from width dim / sigma0 to dim / sigma_target by halving: with
# the method base's 4 and 32, three prune rounds, at 1/4, 2/4 and 3/4 of the
# schedule when a config is generated.
MIMI_PRUNE_ROUNDS = 3


class ComparisonError(RuntimeError):
    """A task or method list the comparison cannot run; says what to do."""


def _entries() -> dict:
    return {**POLICY_METHODS, **METHODS}


def method_key(name: str, host: str) -> Optional[str]:
    """The method-table key of method ``name`` on ``host``, None if it has
    no form there (``lora``, ``swin`` -> ``lora_swin``; ``mona`` -> ``mona``
    on Swin only)."""
    entries = _entries()
    for key in (f'{name}_{host}', name):
        if key in entries and entries[key].host == host:
            return key
    return None


def hosts_of(name: str) -> List[str]:
    """The hosts method ``name`` runs on, Swin first."""
    return [host for host in HOST_TYPES if method_key(name, host)]


def host_of_backbone(backbone_type: str) -> str:
    """The host (``'swin'``, ``'vit'``, ``'dinov2'``) of a backbone type of
    a baseline config."""
    short = str(backbone_type).split('.')[-1]
    if str(backbone_type) == 'mmpretrain.VisionTransformer' or \
            short == HOST_TYPES['dinov2']:
        return 'dinov2'
    if 'Swin' in short:
        return 'swin'
    if 'VisionTransformer' in short or 'ViT' in short:
        return 'vit'
    raise ComparisonError(
        f'Backbone type {backbone_type!r} is neither a Swin nor a ViT: the '
        "comparison's methods run on mmdet's SwinTransformer, mmseg's "
        "VisionTransformer and mmpretrain's VisionTransformer "
        "('mmpretrain.VisionTransformer'). Pass a full fine-tuning config of "
        'one of them.')


@dataclass(frozen=True)
class Row:
    """One method of the table: what runs and where its results go."""
    name: str
    key: str
    host: str
    config: str

    @property
    def label(self) -> str:
        return LABELS[self.name]


@dataclass(frozen=True)
class Pretrain:
    """Step 1 of the demo on one host (no row of its own): ``checkpoint``
    is what the demo configs load, the run's own checkpoint (Swin) or the
    bare backbone state dict written from it (ViT)."""
    host: str
    config: str
    work_dir: str
    checkpoint: str


@dataclass
class Plan:
    task: str
    rows: List[Row]
    pretrains: List[Pretrain] = field(default_factory=list)


def parse_methods(names: Sequence[str]) -> List[str]:
    """Method names in table order; ``all`` is every method."""
    names = list(ALL_METHODS) if list(names) in ([], ['all']) else list(names)
    unknown = [n for n in names if n not in LABELS]
    if unknown:
        raise ComparisonError(
            f'Unknown method(s) {unknown}; choose from {list(ALL_METHODS)} '
            "or 'all'.")
    return [n for n in ALL_METHODS if n in names]


def demo_plan(names: Sequence[str]) -> Plan:
    """Each method on the first host it runs on (Swin, else ViT), with the
    Full row of every host in the table for its ratios."""
    rows = []
    for name in parse_methods(names):
        host = hosts_of(name)[0]
        key = method_key(name, host)
        config = DEMO_CONFIGS.get(key, f'{DEMO_DIR}/compare/{key}.py')
        rows.append(Row(name, key, host, config))
    hosts = list(dict.fromkeys(row.host for row in rows))
    for host in hosts:
        if not any(row.name == 'full' and row.host == host for row in rows):
            rows.insert(0, Row('full', f'full_{host}', host,
                               DEMO_CONFIGS[f'full_{host}']))
    rows.sort(key=lambda r: (ALL_METHODS.index(r.name), r.host))
    from mmengine.config import Config
    base = Config.fromfile(osp.join(REPO, DEMO_BASE))
    pretrains = [Pretrain(h, *DEMO_PRETRAIN[h], base[f'{h}_pretrained'])
                 for h in hosts]
    return Plan('demo', rows, pretrains)


def baseline_plan(baseline: str, names: Sequence[str],
                  work_dir: str) -> Plan:
    """Every method on the host of ``baseline`` (a full fine-tuning config);
    configs the repository does not ship are generated under ``work_dir``."""
    from mmengine.config import Config
    cfg = Config.fromfile(baseline)
    host = host_of_backbone(cfg.model.backbone.type)
    rows = []
    for name in parse_methods(names):
        key = method_key(name, host)
        if key is None:
            raise ComparisonError(
                f'{LABELS[name]} has no {host} form (it runs on '
                f'{", ".join(hosts_of(name))}); {baseline} has a {host} '
                f'backbone. Leave {name} out, or compare on a baseline with '
                'that backbone.')
        rows.append(Row(name, key, host,
                        method_config(baseline, cfg, name, key, work_dir)))
    if not any(row.name == 'full' for row in rows):
        rows.insert(0, Row('full', f'full_{host}', host, baseline))
    return Plan(baseline, rows)


def method_config(baseline: str, cfg, name: str, key: str,
                  work_dir: str) -> str:
    """The config of method ``key`` on the task of ``baseline``: the
    baseline itself for Full, the shipped task config, or a generated one."""
    if name == 'full':
        return baseline
    baselines_dir = osp.realpath(osp.join(REPO, 'configs', 'baselines'))
    if osp.dirname(osp.realpath(baseline)) == baselines_dir:
        shipped = osp.join(REPO, 'configs', name, osp.basename(baseline))
        if osp.exists(shipped):
            return osp.relpath(shipped)
    path = osp.join(work_dir, key, f'{key}.py')
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(generated_config(baseline, cfg, name, key))
    return path


def generated_config(baseline: str, cfg, name: str, key: str) -> str:
    """Config text: ``baseline`` plus the method base's backbone and hooks,
    written out literally (a baseline's own ``custom_hooks`` and
    ``custom_imports`` are kept), with the baseline's pretrained weights."""
    from mmengine.config import Config

    from ..engine.export import plain_config
    entry = _entries()[key]
    method = Config.fromfile(osp.join(REPO, entry.config_base))
    stock = cfg.model.backbone
    backbone = plain_config(method.peft_backbone)
    backbone.update(init_cfg=plain_config(stock.get('init_cfg')),
                    convert_weights=bool(stock.get('convert_weights', False)))
    hooks = plain_config(method.custom_hooks)
    if name == 'mimi':
        loop = cfg.get('train_cfg', {})
        by_epoch = 'max_epochs' in loop
        length = loop.get('max_epochs') or loop.get('max_iters')
        if not length:
            raise ComparisonError(
                f'{baseline}: train_cfg sets neither max_epochs nor '
                "max_iters, so MiMi's prune interval cannot be placed.")
        hooks.append(dict(plain_config(method.mimi_prune),
                          interval=max(1, length // (MIMI_PRUNE_ROUNDS + 1)),
                          by_epoch=by_epoch))
    imports = list(cfg.get('custom_imports', {}).get('imports', []))
    imports += [] if 'mmpeft' in imports else ['mmpeft']
    own_hooks = '*_base_.custom_hooks, ' if cfg.get('custom_hooks') else ''

    def fmt(value):
        return pprint.pformat(value, indent=4, width=75, sort_dicts=False)

    return (f'# Generated by tools/compare.py: {LABELS[name]} '
            f'({entry.config_base}) on the task of {baseline}, with its\n'
            '# pretrained backbone weights. Edit and pass it to '
            'tools/train.py to run it alone.\n'
            f'_base_ = [{osp.abspath(baseline)!r}]\n'
            f'custom_imports = dict(imports={imports!r}, '
            'allow_failed_imports=False)\n'
            f'model = dict(backbone={fmt(backbone)})\n'
            f'custom_hooks = [{own_hooks}*{fmt(hooks)}]\n')
