"""Step 1 of the demo: the source model every method adapts, trained once.

The step-1 config trains the stock tiny backbone on the source domain until
its validation metric stops improving (early stopping, best checkpoint
kept). That takes a while, so its weights are cached outside the work dirs,
as scripts/setup.sh caches the mmcv wheel: under
``$MMPEFT_CACHE/demo_source/<host>-<key>/`` (default ``~/.cache/mmpeft``),
the key a hash of the step-1 config and of the annotation files it trains
and validates on (which carry tools/make_demo_data.py's version). A cached
model is used only when its manifest (``<file>.json`` beside it: key,
checksum, the validation curve, the time it took) matches; a training that
died without one is trained again, resuming from its last checkpoint only
if that file loads. The demo configs load a copy at a fixed path
(``<host>_pretrained`` in
configs/demo/_base_/tiny_swin.py), with the manifest beside it.
"""
import hashlib
import json
import os
import os.path as osp
import re
import shutil
import time
from typing import Callable, List

from ..engine.checkpoint_digest import file_sha256
from .plan import REPO, Pretrain
from .steps import (StepFailed, logged_scalars, read_json, train_command,
                    write_json, write_source_weights)

MANIFEST_KEYS = ('key', 'sha256', 'metric', 'best', 'curve')


def cache_root() -> str:
    """Where cached artefacts live (scripts/setup.sh keeps the mmcv wheel
    there too): ``$MMPEFT_CACHE``, else ``$XDG_CACHE_HOME/mmpeft``, else
    ``~/.cache/mmpeft``."""
    return os.environ.get('MMPEFT_CACHE') or osp.join(
        os.environ.get('XDG_CACHE_HOME') or osp.expanduser('~/.cache'),
        'mmpeft')


def _datasets(dataset) -> list:
    inner = [dataset.get('dataset')] + list(dataset.get('datasets') or [])
    found = [dataset] if dataset.get('ann_file') else []
    return found + [d for i in inner if i for d in _datasets(i)]


def data_files(cfg) -> List[str]:
    """The annotation files the training and validation splits read
    (relative to the repository, as the demo configs give them)."""
    files = []
    for loader in ('train_dataloader', 'val_dataloader'):
        for ds in _datasets(cfg[loader]['dataset']):
            files.append(osp.join(ds.get('data_root', ''), ds['ann_file']))
    return list(dict.fromkeys(files))


def source_key(config: str) -> str:
    """16 hex digits naming one source model: the step-1 config (every
    setting) and the bytes of its annotation files."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    digest = hashlib.sha256(json.dumps(
        cfg.to_dict(), sort_keys=True, default=str).encode())
    for path in data_files(cfg):
        digest.update(path.encode())
        with open(osp.join(REPO, path), 'rb') as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def manifest_path(weights: str) -> str:
    return re.sub(r'\.pth$', '', weights) + '.json'


def valid_manifest(weights: str, key: str):
    """The manifest of ``weights`` if it names ``key`` and the file's
    checksum, else None."""
    manifest, _ = read_json(manifest_path(weights), MANIFEST_KEYS)
    if (manifest is None or manifest['key'] != key
            or not osp.isfile(weights) or file_sha256(weights) !=
            manifest['sha256']):
        return None
    return manifest


def validation_curve(work_dir: str, metric: str) -> List[list]:
    """``[[iteration, value], ...]`` of every validation logged."""
    curve = {int(r['step']): r[metric] for r in logged_scalars(work_dir)
             if metric in r and 'step' in r}
    return [[it, curve[it]] for it in sorted(curve)]


def best_checkpoint(work_dir: str) -> str:
    """The best validated checkpoint mmengine's CheckpointHook kept
    (``best_<metric>_iter_N.pth``; the highest N if several)."""
    found = [(int(m.group(1)), name) for name in os.listdir(work_dir)
             for m in [re.match(r'best_.*_iter_(\d+)\.pth$', name)] if m]
    if not found:
        raise StepFailed(f'{work_dir} holds no best checkpoint '
                         '(best_*_iter_N.pth): the step-1 config must save '
                         'its best validated checkpoint (save_best)')
    return osp.join(work_dir, max(found)[1])


def drop_broken_resume(work_dir: str, echo: Callable) -> None:
    """Forget a resume point that cannot be resumed from (its file missing
    or unreadable: a killed or failed run): training then starts again
    instead of failing on it."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.exists(pointer):
        return
    with open(pointer) as f:
        checkpoint = f.read().strip()
    from ..engine.checkpoint_io import load_file
    try:
        load_file(checkpoint)
        return
    except Exception as err:  # missing, truncated, corrupt
        echo(f'{checkpoint} cannot be resumed from ({type(err).__name__}); '
             'training step 1 from the start')
    os.remove(pointer)


def place(weights: str, manifest: dict, target: str) -> None:
    """Copy the cached ``weights`` and their manifest to ``target``, where
    the demo configs load them."""
    os.makedirs(osp.dirname(target), exist_ok=True)
    tmp = f'{target}.tmp{os.getpid()}'
    shutil.copyfile(weights, tmp)
    os.replace(tmp, target)
    write_json(manifest_path(target), manifest)


def ensure_source(step: Pretrain, run: Callable, echo: Callable,
                  gpus: int = 0, port: int = 29500, progress=None) -> dict:
    """Make ``step.checkpoint`` the source model of ``step.config`` on the
    current data, training it only if no valid cached copy exists; returns
    its manifest. ``run`` is :func:`steps.run_logged`."""
    from mmengine.config import Config
    what = f'step 1 ({step.host})'
    key = source_key(step.config)
    manifest = valid_manifest(step.checkpoint, key)
    if manifest:
        echo(f'{what}: {_summary(manifest)}, {step.checkpoint}')
        return manifest
    cache = osp.join(cache_root(), 'demo_source', f'{step.host}-{key}')
    weights = osp.join(cache, osp.basename(step.checkpoint))
    manifest = valid_manifest(weights, key)
    if manifest is None:
        cfg = Config.fromfile(step.config)
        metric = cfg.get('source_metric', 'coco/bbox_mAP')
        train_dir = osp.join(cache, 'train')
        os.makedirs(train_dir, exist_ok=True)
        drop_broken_resume(train_dir, echo)
        echo(f'{what}: training {osp.relpath(step.config, REPO)} until its '
             f'{metric} stops improving, into {cache} (once: later runs '
             'reuse it)')
        started = time.time()
        done = run(train_command(step.config, train_dir, gpus, port),
                   osp.join(cache, 'train.log'), what, progress, cwd=REPO)
        write_source_weights(best_checkpoint(train_dir), weights,
                             step.backbone_only)
        curve = validation_curve(train_dir, metric)
        best = max(curve, key=lambda point: point[1]) if curve else None
        manifest = dict(
            key=key, host=step.host,
            config=osp.relpath(step.config, REPO),
            checkpoint=osp.basename(best_checkpoint(train_dir)),
            sha256=file_sha256(weights), metric=metric,
            best=dict(iteration=best[0], value=best[1]) if best else None,
            curve=curve, max_iters=cfg.train_cfg.max_iters,
            train_wall_s=time.time() - started,
            train_cpu_s=done.get('cpu_s'), train_load_mean=done.get(
                'load_mean'),
            written=time.strftime('%Y-%m-%d %H:%M:%S'))
        write_json(manifest_path(weights), manifest)
    place(weights, manifest, step.checkpoint)
    echo(f'{what}: {_summary(manifest)}, {step.checkpoint}')
    return manifest


def _summary(manifest: dict) -> str:
    best = manifest['best'] or {}
    return (f"source model {manifest['key']} ({manifest['metric']} "
            f"{best.get('value')} at iteration {best.get('iteration')} of "
            f"{manifest['curve'][-1][0] if manifest['curve'] else '?'})")
