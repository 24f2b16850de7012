"""Which config each method of a comparison runs: the demo's, the shipped
task config of a baseline, or one generated from a user's baseline and the
method's config base."""
import os
import os.path as osp
import pprint
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from ..methods import HOST_TYPES, METHODS, POLICY_METHODS

# The repository root: tools/ and configs/ are found from it.
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# Table order and labels: the Mona paper's Table 1, then the methods mmpeft
# adds. The methods themselves are read from mmpeft/methods.py
# (``method_names``): one it ships that is not named here still runs, after
# these, under its own name.
LABELS = {
    'full': 'Full', 'fixed': 'Fixed', 'bitfit': 'BitFit',
    'normtuning': 'NormTuning', 'partial1': 'Partial-1',
    'adapter': 'Adapter', 'lora': 'LoRA', 'adaptformer': 'AdaptFormer',
    'lorand': 'LoRand', 'mona': 'Mona', 'repadapter': 'RepAdapter',
    'mimi': 'MiMi', 'e3va': 'E3VA'
}
# The rows every other row is compared with, on each host of a table.
REFERENCES = ('full', 'fixed')
# Cheaper-training forms of a method that the demo compares beside it: a
# shipped `configs/demo/compare/<key>_<form>.py` is a row of its own.
FORMS = {'last2': 'last 2 stages', 'bf16saves': 'bf16 saves'}

DEMO_DIR = osp.join(REPO, 'configs', 'demo')
# Step 1 of the demo per host: its config; the file the demo configs load is
# `<host>_pretrained` in DEMO_BASE (mmpeft/comparison/source.py caches it).
DEMO_BASE = osp.join(DEMO_DIR, '_base_', 'tiny_swin.py')
DEMO_PRETRAIN = {
    'swin': osp.join(DEMO_DIR, 'swin_fasterrcnn_coco.py'),
    'vit': osp.join(DEMO_DIR, 'vit_fasterrcnn_coco.py'),
}
DEMO_CONFIGS = {
    'full_swin': osp.join(DEMO_DIR, 'swin_fasterrcnn_voc.py'),
    'full_vit': osp.join(DEMO_DIR, 'vit_fasterrcnn_voc.py'),
    'mona': osp.join(DEMO_DIR, 'mona_fasterrcnn_voc.py'),
}
# The data the demo configs read (tools/make_demo_data.py --out data/demo).
DEMO_DATA = osp.join(REPO, 'data', 'demo')

# MiMi goes from width dim / sigma0 to dim / sigma_target by halving: with
# the method base's 4 and 32, three prune rounds, at 1/4, 2/4 and 3/4 of the
# schedule when a config is generated.
MIMI_PRUNE_ROUNDS = 3


class ComparisonError(RuntimeError):
    """A task or method list the comparison cannot run; says what to do."""


def _entries() -> dict:
    return {**POLICY_METHODS, **METHODS}


def _name_of(key: str, host: str) -> str:
    suffix = f'_{host}'
    return key[:-len(suffix)] if key.endswith(suffix) else key


def method_names() -> Tuple[str, ...]:
    """Every method of mmpeft/methods.py by its host-free name (``lora``
    for ``lora_swin`` / ``lora_vit``), in table order: LABELS first."""
    names = dict.fromkeys(_name_of(key, entry.host)
                          for key, entry in _entries().items())
    return tuple([n for n in LABELS if n in names] +
                 [n for n in names if n not in LABELS])


def label_of(name: str) -> str:
    return LABELS.get(name, name)


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


# mmpretrain backbones with adapter hosts but no method-table host (type ->
# model): not mmseg's ViT, though their names hold 'ViT'.
NO_TABLE_HOSTS = {'ViTEVA02': 'EVA-02', 'AdapterViTEVA02': 'EVA-02',
                  'ViTSAM': 'SAM', 'AdapterViTSAM': 'SAM'}


def host_of_backbone(backbone_type: str) -> str:
    """The host (``'swin'``, ``'vit'``, ``'dinov2'``) of a backbone type of
    a baseline config."""
    short = str(backbone_type).split('.')[-1]
    if str(backbone_type) == 'mmpretrain.VisionTransformer' or \
            short == HOST_TYPES['dinov2']:
        return 'dinov2'
    if short in NO_TABLE_HOSTS:
        raise ComparisonError(
            f'Backbone type {backbone_type!r} ({NO_TABLE_HOSTS[short]}) has '
            'an adapter host (AdapterViTEVA02 / AdapterViTSAM: set adapters= '
            'in its backbone config) but no method-table entries, so the '
            'comparison has no methods for it. Compare on a Swin, mmseg ViT '
            "or mmpretrain VisionTransformer (DINOv2) baseline.")
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
    """One method of the table: what runs and where its results go
    (``config``: an absolute path)."""
    name: str
    key: str
    host: str
    config: str
    form: str = ''

    @property
    def label(self) -> str:
        label = label_of(self.name)
        return f'{label} ({FORMS[self.form]})' if self.form else label

    @property
    def is_reference(self) -> bool:
        return self.name in REFERENCES


@dataclass(frozen=True)
class Pretrain:
    """Step 1 of the demo on one host (no row of its own): ``config`` trains
    the source model, ``checkpoint`` is the file the demo configs load (the
    detector's weights for mmdet's Swin, which reads their ``backbone.``
    keys; the bare backbone state dict for mmseg's ViT: ``backbone_only``)."""
    host: str
    config: str
    checkpoint: str
    backbone_only: bool


@dataclass
class Plan:
    """The rows to run, step 1 of the demo if any, and the directory the
    tools run in (the configs' relative data roots and checkpoints are
    relative to it: the repository for the demo, the caller's for a
    user's baseline)."""
    task: str
    rows: List[Row]
    pretrains: List[Pretrain] = field(default_factory=list)
    cwd: str = field(default_factory=os.getcwd)


def parse_methods(names: Sequence[str]) -> List[str]:
    """Method names in table order; ``all`` is every method."""
    known = method_names()
    names = list(known) if list(names) in ([], ['all']) else list(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ComparisonError(
            f'Unknown method(s) {unknown}; choose from {list(known)} '
            "or 'all'.")
    return [n for n in known if n in names]


def _sorted(rows: List[Row]) -> List[Row]:
    order = method_names()
    forms = ('',) + tuple(FORMS)
    return sorted(rows, key=lambda r: (order.index(r.name), r.host,
                                       forms.index(r.form)))


def demo_config(key: str) -> str:
    return DEMO_CONFIGS.get(key, osp.join(DEMO_DIR, 'compare', f'{key}.py'))


def demo_plan(names: Sequence[str]) -> Plan:
    """Each method on the first host it runs on (Swin, else ViT), with the
    Full and Fixed rows of every host in the table (the references of its
    ratios and differences) and the method's cheaper forms that have a demo
    config (``<key>_<form>.py``, FORMS). ``all``: every method with a demo
    config (``configs/demo/compare/<key>.py``); a method named without one
    is an error."""
    everything = list(names) in ([], ['all'])
    rows = []
    for name in parse_methods(names):
        host = hosts_of(name)[0]
        key = method_key(name, host)
        config = demo_config(key)
        if not osp.isfile(config):
            if everything:
                continue
            raise ComparisonError(
                f'{label_of(name)} has no demo config ({osp.relpath(config)}'
                ' is missing): write one from configs/demo/compare/*.py, or '
                'compare it on a task config of your own.')
        rows.append(Row(name, key, host, config))
        for form in FORMS:
            config = demo_config(f'{key}_{form}')
            if osp.isfile(config):
                rows.append(Row(name, f'{key}_{form}', host, config, form))
    hosts = list(dict.fromkeys(row.host for row in rows))
    for host in hosts:
        for name in REFERENCES:
            if not any(r.name == name and r.host == host for r in rows):
                key = method_key(name, host)
                rows.append(Row(name, key, host, demo_config(key)))
    from mmengine.config import Config
    base = Config.fromfile(DEMO_BASE)
    pretrains = [
        Pretrain(h, DEMO_PRETRAIN[h],
                 osp.join(REPO, base[f'{h}_pretrained']), h == 'vit')
        for h in hosts
    ]
    return Plan('demo', _sorted(rows), pretrains, cwd=REPO)


def demo_data_error() -> Optional[str]:
    """Why the demo cannot run on ``data/demo`` as it is (missing, or written
    by another version of tools/make_demo_data.py), None if it can."""
    import importlib.util
    import json
    spec = importlib.util.spec_from_file_location(
        'make_demo_data', osp.join(REPO, 'tools', 'make_demo_data.py'))
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    make = (f'python tools/make_demo_data.py --out data/demo (in {REPO})')
    ann = osp.join(DEMO_DATA, 'coco', 'annotations',
                   'instances_train2017.json')
    if not osp.isfile(ann):
        return f'{ann} is missing: generate the demo data with {make}'
    with open(ann) as f:
        version = json.load(f).get('info', {}).get('version')
    if version != generator.GENERATOR_VERSION:
        return (f'{DEMO_DATA} was written by another version of '
                f'tools/make_demo_data.py (version {version}, now '
                f'{generator.GENERATOR_VERSION}): run {make} again')
    return None


def baseline_plan(baseline: str, names: Sequence[str],
                  work_dir: str) -> Plan:
    """Every method on the host of ``baseline`` (a full fine-tuning config),
    with the Full and Fixed rows; configs the repository does not ship are
    generated under ``work_dir``."""
    from mmengine.config import Config
    if not osp.isfile(baseline):
        raise ComparisonError(
            f'{baseline} is not a file (from {os.getcwd()}): give the path '
            "of a full fine-tuning config, or 'demo'.")
    baseline = osp.abspath(baseline)
    cfg = Config.fromfile(baseline)
    host = host_of_backbone(cfg.model.backbone.type)
    names = parse_methods(names)
    for name in names:
        if method_key(name, host) is None:
            raise ComparisonError(
                f'{label_of(name)} has no {host} form (it runs on '
                f'{", ".join(hosts_of(name))}); {baseline} has a {host} '
                f'backbone. Leave {name} out, or compare on a baseline with '
                'that backbone.')
    names += [n for n in REFERENCES if n not in names]
    rows = [Row(name, method_key(name, host), host,
                method_config(baseline, cfg, name, method_key(name, host),
                              work_dir)) for name in names]
    return Plan(baseline, _sorted(rows))


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
            return shipped
    path = osp.abspath(osp.join(work_dir, key, f'{key}.py'))
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

    return (f'# Generated by tools/compare.py: {label_of(name)} '
            f'({entry.config_base}) on the task of {baseline}, with its\n'
            '# pretrained backbone weights. Edit and pass it to '
            'tools/train.py to run it alone.\n'
            f'_base_ = [{osp.abspath(baseline)!r}]\n'
            f'custom_imports = dict(imports={imports!r}, '
            'allow_failed_imports=False)\n'
            f'model = dict(backbone={fmt(backbone)})\n'
            f'custom_hooks = [{own_hooks}*{fmt(hooks)}]\n')


def task_config(config: str, cfg_options: Optional[dict] = None):
    """``config`` as the tools load it with ``--cfg-options``."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def config_lr(cfg, config: str) -> float:
    """The optimizer's learning rate, which ``--lr`` and ``--lr-grid`` set
    through ``optim_wrapper.optimizer.lr``."""
    lr = cfg.get('optim_wrapper', {}).get('optimizer', {}).get('lr')
    if not isinstance(lr, (int, float)):
        raise ComparisonError(
            f'{config} sets no optim_wrapper.optimizer.lr, which --lr and '
            '--lr-grid change; give its optimizer an lr.')
    return float(lr)


# Dataset keys that change how samples are read, not which samples.
_NOT_DATA = ('pipeline', 'test_mode', 'backend_args', 'serialize_data',
             'lazy_init', 'max_refetch', 'indices')


def data_identity(dataset):
    """What makes two dataset configs read the same samples (the type, data
    roots, annotation files, prefixes, filters, inner datasets)."""
    if isinstance(dataset, dict):
        return {k: data_identity(v) for k, v in sorted(dataset.items())
                if k not in _NOT_DATA}
    if isinstance(dataset, (list, tuple)):
        return [data_identity(v) for v in dataset]
    return dataset


def validation_split_error(cfg, config: str) -> Optional[str]:
    """Why ``config`` has no validation split apart from its test split
    (choosing a learning rate on the test data would tune on the test
    set), None if it has one."""
    val, test = cfg.get('val_dataloader'), cfg.get('test_dataloader')
    if not val or not cfg.get('val_evaluator'):
        return (f'{config} has no val_dataloader / val_evaluator: --lr-grid '
                'chooses on the validation split.')
    if not test or data_identity(val.get('dataset')) == data_identity(
            test.get('dataset')):
        return (f'{config}: val_dataloader and test_dataloader read the same '
                'data, so choosing a learning rate on it would tune on the '
                'test set. Give the task a validation split of its own (e.g. '
                '--cfg-options val_dataloader.dataset.ann_file=...), or pass '
                '--lr METHOD=VALUE instead of --lr-grid.')
    return None
