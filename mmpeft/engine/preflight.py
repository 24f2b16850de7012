"""First-run checks of ``tools/train.py`` / ``tools/test.py``, before the runner is built.

A config reads dataset files (``ann_file``, ``data_root``, ``data_prefix`` of
the dataloaders it runs, through wrappers such as ``RepeatDataset`` /
``ConcatDataset``; evaluator ``ann_file``) and checkpoints (``Pretrained``
init_cfgs, ``pretrained``, ``load_from``, which ``tools/test.py`` sets to its
checkpoint argument, and ``AdapterLoadHook``). Without this check a missing
file surfaces as a loader traceback, for a checkpoint only after the whole
model is built. :func:`preflight` instead exits with one message: what is
missing, the expected layout, the download command, and the command that runs
the same config on the demo data of ``tools/make_demo_data.py``.

The layouts and download commands are config data, not comments: dataset and
model base configs carry top-level ``download_<name>`` dicts, with
``data_root`` (a dataset: ``name``, ``layout``, ``command``, ``demo_root``)
or ``file`` (a checkpoint: ``command``).
"""
import os.path as osp
import sys
from typing import Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config

from ..env import HOSTS, host_problem, install_hint, missing_host

DEMO_DATA = 'data/demo'
# The dataloaders (and evaluators) each tool's runner builds.
_PHASES = {
    'train': (('train_dataloader', None), ('val_dataloader', 'val_evaluator')),
    'test': (('test_dataloader', 'test_evaluator'), ),
}


class Missing:
    """One missing input: the path, the config key that names it, and
    (datasets) the dataset's ``data_root``."""

    def __init__(self, path: str, key: str, data_root: Optional[str] = None):
        self.path, self.key, self.data_root = path, key, data_root


def _is_remote(path: str) -> bool:
    return '://' in path


def _join(root: Optional[str], path: str) -> str:
    """mmengine's BaseDataset rule: relative paths are under data_root."""
    if root and not osp.isabs(path) and not _is_remote(path):
        return osp.join(root, path)
    return path


def _datasets(cfg, key: str) -> Iterator[Tuple[dict, str]]:
    """Leaf dataset configs under ``cfg`` (wrappers unpacked), with keys."""
    if not isinstance(cfg, dict):
        return
    if 'dataset' in cfg:
        yield from _datasets(cfg['dataset'], f'{key}.dataset')
    elif 'datasets' in cfg:
        for i, sub in enumerate(cfg['datasets']):
            yield from _datasets(sub, f'{key}.datasets.{i}')
    else:
        yield cfg, key


def missing_data(cfg: Config, tool: str) -> List[Missing]:
    """Dataset files and directories the ``tool`` run reads that are missing."""
    missing, seen = [], set()

    def check(path, key, root=None):
        if path and not _is_remote(path) and path not in seen:
            seen.add(path)
            if not osp.exists(path):
                missing.append(Missing(path, key, root))

    for loader_key, evaluator_key in _PHASES[tool]:
        loader = cfg.get(loader_key)
        if not loader:
            continue
        for dataset, key in _datasets(loader.get('dataset'),
                                      f'{loader_key}.dataset'):
            root = dataset.get('data_root')
            if root and not _is_remote(root) and not osp.isdir(root):
                check(root, f'{key}.data_root', root)
                continue  # its files are missing too: the root says it all
            if dataset.get('ann_file'):
                check(_join(root, dataset['ann_file']), f'{key}.ann_file',
                      root)
            prefix = dataset.get('data_prefix') or {}
            for name, value in (prefix.items() if isinstance(prefix, dict)
                                else [('', prefix)]):
                if isinstance(value, str) and value:
                    check(_join(root, value),
                          f'{key}.data_prefix' + (f'.{name}' if name else ''),
                          root)
        evaluators = cfg.get(evaluator_key) if evaluator_key else None
        evaluators = evaluators if isinstance(evaluators, list) else [
            evaluators]
        for i, evaluator in enumerate(evaluators):
            if isinstance(evaluator, dict) and isinstance(
                    evaluator.get('ann_file'), str):
                suffix = f'.{i}' if isinstance(cfg.get(evaluator_key),
                                               list) else ''
                check(evaluator['ann_file'],
                      f'{evaluator_key}{suffix}.ann_file')
    return missing


def _pretrained(cfg, key: str) -> Iterator[Tuple[str, str, str]]:
    """(checkpoint, its key, the key that disables it) in a model config."""
    if isinstance(cfg, dict):
        init = cfg.get('init_cfg')
        inits = init if isinstance(init, list) else [init]
        for i, one in enumerate(inits):
            if isinstance(one, dict) and one.get('type') == 'Pretrained' \
                    and isinstance(one.get('checkpoint'), str):
                init_key = f'{key}.init_cfg' + (
                    f'.{i}' if isinstance(init, list) else '')
                yield (one['checkpoint'], f'{init_key}.checkpoint',
                       f'{key}.init_cfg')
        if isinstance(cfg.get('pretrained'), str):
            yield cfg['pretrained'], f'{key}.pretrained', f'{key}.pretrained'
        for name, value in cfg.items():
            if name not in ('init_cfg', 'pretrained'):
                yield from _pretrained(value, f'{key}.{name}')
    elif isinstance(cfg, list):
        for i, value in enumerate(cfg):
            yield from _pretrained(value, f'{key}.{i}')


def missing_checkpoints(cfg: Config,
                        tool: str) -> List[Tuple[Missing, Optional[str]]]:
    """(missing checkpoint, the ``--cfg-options`` key=value that skips it on
    demo data, or ``None`` where the run cannot do without it)."""
    found = []
    if tool == 'train':  # a tested model loads everything from load_from
        for path, key, disable in _pretrained(cfg.get('model'), 'model'):
            found.append((path, key, f'{disable}=None'))
    load_from = cfg.get('load_from')
    if isinstance(load_from, str) and load_from:
        key = 'load_from' if tool == 'train' else 'the checkpoint argument'
        found.append((load_from, key, 'load_from=None'
                      if tool == 'train' and not cfg.get('resume') else None))
    for i, hook in enumerate(cfg.get('custom_hooks') or []):
        if hook.get('type') == 'AdapterLoadHook' and isinstance(
                hook.get('checkpoint'), str):
            found.append((hook['checkpoint'], '--adapter', None))
    return [(Missing(path, key), fix) for path, key, fix in found
            if not _is_remote(path) and not osp.isfile(osp.expanduser(path))]


def missing_hosts(cfg: Config) -> List[str]:
    """One line per missing package the config needs: its ``default_scope``,
    and every mmpeft backbone / neck / hook whose host is missing."""
    lines = []
    scope = cfg.get('default_scope')
    if scope in HOSTS and host_problem(scope) is not None:
        lines.append(f'default_scope={scope!r} needs {HOSTS[scope][0]}, '
                     f'which {host_problem(scope)}. Install it with: '
                     f'{install_hint([scope])}')

    def walk(value, registry):
        if isinstance(value, dict):
            if isinstance(value.get('type'), str):
                message = missing_host(registry, value['type'])
                if message and message not in lines:
                    lines.append(message)
            for sub in value.values():
                walk(sub, registry)
        elif isinstance(value, list):
            for sub in value:
                walk(sub, registry)

    walk(cfg.get('model'), 'MODELS')
    walk(cfg.get('custom_hooks'), 'HOOKS')
    return lines


def _downloads(cfg: Config) -> List[dict]:
    return [v for k, v in cfg.items()
            if k.startswith('download_') and isinstance(v, dict)]


def _same(a: str, b: str) -> bool:
    return osp.normpath(a) == osp.normpath(b)


def report(cfg: Config, config: str, tool: str) -> Optional[str]:
    """The message for what the run misses, or ``None`` if nothing is."""
    hosts = missing_hosts(cfg)
    if hosts:  # nothing else is worth checking before these are installed
        return '\n'.join(hosts)
    data = missing_data(cfg, tool)
    ckpts = missing_checkpoints(cfg, tool)
    if not data and not ckpts:
        return None
    downloads = _downloads(cfg)
    lines = [f'{config}: {len(data) + len(ckpts)} input(s) of this '
             f'{tool} run do not exist (nothing was built).']
    demo_options, demo_possible = [], True
    roots = []
    for m in data:
        if m.data_root and m.data_root not in roots:
            roots.append(m.data_root)
    for root in roots:
        entry = next((d for d in downloads
                      if _same(d.get('data_root', ''), root)), None)
        name = entry.get('name', root) if entry else root
        lines.append(f'Missing dataset files ({name}):')
        lines += [
            f'  {m.path}  ({m.key})' for m in data if m.data_root == root
        ]
        if entry:
            lines.append(f'  expected layout: {entry["layout"]}')
            lines.append(f'  download: {entry["command"]}')
        else:
            lines.append('  (no download_* entry in the config for this '
                         'data_root: see the dataset\'s own instructions)')
            demo_possible = False
    others = [m for m in data if not m.data_root]
    if others:
        lines.append('Missing evaluation files:')
        lines += [f'  {m.path}  ({m.key})' for m in others]
    for m, fix in ckpts:
        lines.append(f'Missing checkpoint: {m.path}  ({m.key})')
        entry = next((d for d in downloads
                      if _same(d.get('file', ''), m.path)), None)
        if entry:
            lines.append(f'  download: {entry["command"]}')
        elif m.key == '--adapter' or m.key == 'the checkpoint argument':
            lines.append('  give the path of an existing checkpoint')
        if fix is None:
            demo_possible = False
        else:
            demo_options.append(fix)
    if not demo_possible:
        return '\n'.join(lines)
    if data:
        demo = demo_command(cfg, config, tool, downloads)
        if demo is not None:
            lines.append('To run this config on the generated demo data '
                         'instead (no download; missing pretrained weights '
                         'are left at random init):')
            lines.append(f'  python tools/make_demo_data.py --out {DEMO_DATA}')
            lines.append('  ' + ' '.join([demo, *demo_options]))
    elif demo_options:
        lines.append('To try this command without the missing weights '
                     '(random init, not for results):')
        lines.append(f'  python tools/{tool}.py {config} --cfg-options ' +
                     ' '.join(demo_options))
    return '\n'.join(lines)


def demo_options(cfg: Config, tool: str,
                 downloads: Sequence[dict]) -> Optional[List[str]]:
    """``--cfg-options`` that point the run's datasets (and evaluator
    ``ann_file``) at their ``demo_root``; ``None`` if one has none."""
    options = []
    for loader_key, evaluator_key in _PHASES[tool]:
        loader = cfg.get(loader_key)
        if not loader:
            continue
        for dataset, key in _datasets(loader.get('dataset'),
                                      f'{loader_key}.dataset'):
            root = dataset.get('data_root')
            entry = next((d for d in downloads if root and _same(
                d.get('data_root', ''), root)), None)
            if entry is None or 'demo_root' not in entry:
                return None
            options.append(f'{key}.data_root={entry["demo_root"]}')
        evaluators = cfg.get(evaluator_key) if evaluator_key else None
        as_list = evaluators if isinstance(evaluators, list) else [evaluators]
        for i, evaluator in enumerate(as_list):
            ann_file = evaluator.get('ann_file') if isinstance(
                evaluator, dict) else None
            if not isinstance(ann_file, str):
                continue
            entry = next((d for d in downloads if 'demo_root' in d and osp.
                          normpath(ann_file).startswith(
                              osp.normpath(d.get('data_root', '')) + '/')),
                         None)
            if entry is None:
                return None
            rel = osp.relpath(ann_file, entry['data_root'])
            suffix = f'.{i}' if isinstance(evaluators, list) else ''
            options.append(f'{evaluator_key}{suffix}.ann_file='
                           f'{osp.join(entry["demo_root"], rel)}')
    return options


def demo_command(cfg: Config, config: str, tool: str,
                 downloads: Sequence[dict]) -> Optional[str]:
    options = demo_options(cfg, tool, downloads)
    if options is None:
        return None
    checkpoint = ' CHECKPOINT' if tool == 'test' else ''
    return (f'python tools/{tool}.py {config}{checkpoint} --cfg-options ' +
            ' '.join(options))


def set_dota_nproc(cfg: Config, tool: str) -> None:
    """DOTAMetric's process pool follows the loader's ``num_workers`` (at
    least 1) where the config does not set ``nproc`` (mmpeft/compat.py)."""
    for loader_key, evaluator_key in _PHASES[tool]:
        evaluators = cfg.get(evaluator_key) if evaluator_key else None
        loader = cfg.get(loader_key) or {}
        for evaluator in (evaluators if isinstance(evaluators, list) else
                          [evaluators]):
            if isinstance(evaluator, dict) and evaluator.get('type') in (
                    'DOTAMetric', 'mmrotate.DOTAMetric') \
                    and 'nproc' not in evaluator:
                evaluator['nproc'] = max(1, loader.get('num_workers', 0))


def preflight(cfg: Config, config: str, tool: str) -> None:
    """Exit (status 1) with :func:`report`'s message if the ``tool``
    ('train' or 'test') run misses an input; then default DOTAMetric's
    ``nproc`` (:func:`set_dota_nproc`)."""
    assert tool in _PHASES, tool
    message = report(cfg, config, tool)
    if message is not None:
        print(message, file=sys.stderr)
        raise SystemExit(1)
    set_dota_nproc(cfg, tool)
