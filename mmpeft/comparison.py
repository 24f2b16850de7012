"""The comparison table: PEFT methods trained and evaluated on one task.

What a user chooses a method by, measured in one run so that the ratios are
honest on a noisy machine: the task metric of the merged (deploy) model, the
trainable parameters as a percentage of the backbone (the PEFT papers' "% of
backbone"), the size of the file each fine-tuned task adds, the training step
time and peak memory and the merged model's inference latency, each as a
ratio to full fine-tuning on the same host.

Every run goes through the user-facing tools (``tools/train.py`` or
``tools/dist_train.sh``, ``tools/test.py``, ``tools/count_params.py``) in a
subprocess, so the table measures what a user would run, nothing private.
Each method's results are written to its own folder as soon as they exist,
so a re-run skips what is done. ``tools/compare.py`` is the command line.

A task is either

- ``demo``: the CPU transfer demo (step 1 pretrains the tiny backbones on the
  COCO-format shapes, every method fine-tunes on the VOC-format set, configs
  in ``configs/demo/``), or
- a full fine-tuning baseline config: each method's config is the shipped
  ``configs/<method>/<task>.py`` when the baseline is one of
  ``configs/baselines/``, else it is generated from the baseline and the
  method's config base, keeping the baseline's pretrained weights.
"""
import json
import os
import os.path as osp
import pprint
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .methods import HOST_TYPES, METHODS, POLICY_METHODS

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# Table order: the Mona paper's Table 1, then the methods mmpeft adds.
LABELS = {
    'full': 'Full', 'fixed': 'Fixed', 'bitfit': 'BitFit',
    'normtuning': 'NormTuning', 'partial1': 'Partial-1',
    'adapter': 'Adapter', 'lora': 'LoRA', 'adaptformer': 'AdaptFormer',
    'lorand': 'LoRand', 'mona': 'Mona', 'repadapter': 'RepAdapter',
    'mimi': 'MiMi'
}
ALL_METHODS = tuple(LABELS)
# The metric each kind of task is ranked by, first found first.
PRIMARY_METRICS = ('pascal_voc/mAP', 'coco/bbox_mAP', 'coco/segm_mAP',
                   'mIoU', 'dota/mAP')

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
    """``'swin'`` or ``'vit'`` for a backbone type of a baseline config."""
    short = str(backbone_type).split('.')[-1]
    if 'Swin' in short:
        return 'swin'
    if 'VisionTransformer' in short or 'ViT' in short:
        return 'vit'
    raise ComparisonError(
        f'Backbone type {backbone_type!r} is neither a Swin nor a ViT: the '
        "comparison's methods run on mmdet's SwinTransformer and mmseg's "
        'VisionTransformer. Pass a full fine-tuning config of one of them.')


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

    from .engine.export import plain_config
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


# --------------------------------------------------------------------------
# running the tools
# --------------------------------------------------------------------------
def tool(script: str) -> str:
    return osp.join(REPO, 'tools', script)


def train_command(config: str, work_dir: str, gpus: int,
                  port: int = 29500) -> List[str]:
    """tools/train.py, or tools/dist_train.sh on ``gpus`` > 0 (rendezvous
    on ``port``: runs side by side need their own); auto-resume (a re-run
    goes on from the last checkpoint of an interrupted one)."""
    args = ['--work-dir', work_dir, '--resume']
    if gpus:
        return [*_dist_env(port), tool('dist_train.sh'), config, str(gpus),
                *args]
    return [sys.executable, tool('train.py'), config, *args]


def _dist_env(port: int) -> List[str]:
    """The dist scripts' launcher: this Python (not the first on PATH) and
    the rendezvous port."""
    return ['env', f'PORT={port}', f'PYTHON={sys.executable}', 'bash']


def test_command(config: str, checkpoint: str, work_dir: str, gpus: int,
                 port: int = 29500) -> List[str]:
    if gpus:
        return [*_dist_env(port), tool('dist_test.sh'), config, checkpoint,
                str(gpus), '--work-dir', work_dir]
    return [sys.executable, tool('test.py'), config, checkpoint,
            '--work-dir', work_dir]


_ITER = re.compile(r'Iter\(train\)\s*\[\s*(\d+)/(\d+)\]')


class StepFailed(RuntimeError):
    """A tool run of the comparison failed; the message names its log."""


def run_logged(cmd: List[str], log: str, what: str,
               progress=None) -> dict:
    """Run ``cmd`` with its output in ``log``; report training progress
    through ``progress(done, total)``. Returns the peak resident memory of
    the process tree's largest process (MiB) and the wall time. Raises
    :class:`StepFailed` naming the log on a non-zero exit."""
    os.makedirs(osp.dirname(log) or '.', exist_ok=True)
    start = time.time()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (REPO, os.environ.get('PYTHONPATH')) if p))
    with open(log, 'a') as out:
        out.write(f'$ {" ".join(cmd)}\n')
        out.flush()
        offset = out.tell()  # progress from this run, not an earlier one
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                cwd=os.getcwd(), env=env)
        stop = threading.Event()
        watcher = threading.Thread(
            target=_watch, args=(log, offset, progress, stop), daemon=True)
        if progress is not None:
            watcher.start()
        # wait4, not Popen.wait: its rusage holds the peak RSS of the child
        # and of the processes it reaped (data workers, ranks).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        if progress is not None:
            watcher.join()
    if proc.returncode != 0:
        raise StepFailed(f'{what} failed (exit {proc.returncode}); see {log}')
    return dict(peak_rss_mib=usage.ru_maxrss / 1024,
                wall_s=time.time() - start)


def _watch(log: str, offset: int, progress, stop: threading.Event) -> None:
    seen = None
    while not stop.wait(2.0):
        try:
            with open(log, 'rb') as f:
                f.seek(max(offset, os.path.getsize(log) - 20000))
                found = _ITER.findall(f.read().decode('utf-8', 'replace'))
        except OSError:
            continue
        if found and found[-1] != seen:
            seen = found[-1]
            progress(int(seen[0]), int(seen[1]))


def last_checkpoint(work_dir: str) -> str:
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.exists(path):
        raise StepFailed(f'{work_dir} has no last_checkpoint: the training '
                         'run saved no checkpoint')
    with open(path) as f:
        return f.read().strip()


def train_scalars(work_dir: str) -> List[dict]:
    """The training log records of every run in ``work_dir`` (mmengine's
    ``<timestamp>/vis_data/scalars.json``), oldest first."""
    records = []
    for stamp in sorted(os.listdir(work_dir)):
        path = osp.join(work_dir, stamp, 'vis_data', 'scalars.json')
        if osp.exists(path):
            with open(path) as f:
                records += [json.loads(line) for line in f if line.strip()]
    return [r for r in records if 'loss' in r]


def step_stats(records: List[dict]) -> dict:
    """Median seconds per training step (the first logged window, with its
    warm-up, left out when there are others) and the peak device memory
    mmengine logs on a GPU (MiB), None on CPU."""
    times = [r['time'] for r in records if 'time' in r]
    times = times[1:] if len(times) > 1 else times
    memory = [r['memory'] for r in records if 'memory' in r]
    return dict(step_time_s=statistics.median(times) if times else None,
                gpu_memory_mib=max(memory) if memory else None)


def primary_metric(metrics: Dict[str, float]) -> Optional[str]:
    return next((k for k in PRIMARY_METRICS if k in metrics), None)


def test_metrics(log: str) -> Dict[str, float]:
    """The metrics tools/test.py prints as its last JSON line."""
    with open(log) as f:
        for line in reversed(f.read().splitlines()):
            if line.startswith('{'):
                return json.loads(line)
    raise StepFailed(f'no metrics line in {log}')


def trainable_share(params_json: str) -> dict:
    """Trainable backbone-side parameters (pretrained weights that train
    plus adapters) and their percentage of the pretrained backbone, from a
    tools/count_params.py / PEFTFreezeHook table."""
    from .engine.param_table import ADAPTERS, BACKBONE
    with open(params_json) as f:
        table = json.load(f)
    trainable = sum(g['trainable'] for g in table['groups']
                    if g['group'] in (BACKBONE, ADAPTERS))
    backbone = table['denominators']['backbone']
    return dict(trainable_params=trainable, backbone_params=backbone,
                trainable_pct=100.0 * trainable / backbone)


def task_file(checkpoint: str, is_full: bool) -> str:
    """What a fine-tuned task adds to disk: the adapter-only checkpoint of
    a PEFT run; for Full, the whole model's weights (written here, weights
    only, beside the checkpoint)."""
    from .engine.export import companion_paths
    if not is_full:
        return companion_paths(checkpoint)['adapters']
    from .engine.checkpoint_io import load_file
    from .engine.export import save_atomic
    path = re.sub(r'\.pth$', '_weights.pth', checkpoint)
    if not osp.exists(path):
        save_atomic(load_file(checkpoint)['state_dict'], path)
    return path


class Comparison:
    """Runs a :class:`Plan` into ``work_dir`` and tabulates it."""

    def __init__(self, plan: Plan, work_dir: str, gpus: int = 0,
                 jobs: int = 1, latency_iters: int = 20, echo=print):
        self.plan, self.work_dir, self.gpus = plan, work_dir, gpus
        self.jobs, self.latency_iters = jobs, latency_iters
        self._echo, self._lock = echo, threading.Lock()
        # One torchrun rendezvous port per run (from $PORT, as
        # dist_train.sh): --jobs runs them side by side.
        names = [f'pretrain_{p.host}' for p in plan.pretrains] + [
            r.key for r in plan.rows]
        base = int(os.environ.get('PORT', 29500))
        self.ports = {name: base + i for i, name in enumerate(names)}

    def echo(self, text: str) -> None:
        with self._lock:
            self._echo(f'[{time.strftime("%H:%M:%S")}] {text}')

    def row_dir(self, row: Row) -> str:
        return osp.join(self.work_dir, row.key)

    # ---------------------------------------------------------------- steps
    def pretrain(self, step: Pretrain) -> None:
        what = f'step 1 ({step.host})'
        if osp.exists(step.checkpoint):
            self.echo(f'{what}: done before, {step.checkpoint}')
            return
        self.echo(f'{what}: pretraining {step.config}')
        run_logged(train_command(step.config, step.work_dir, self.gpus,
                                 self.ports[f'pretrain_{step.host}']),
                   osp.join(self.work_dir, f'pretrain_{step.host}.log'),
                   what, self._progress(what))
        ckpt = last_checkpoint(step.work_dir)
        if step.host == 'vit':
            write_backbone_checkpoint(ckpt, step.checkpoint)
        elif osp.realpath(ckpt) != osp.realpath(step.checkpoint):
            raise StepFailed(f'{what} saved {ckpt}, but the demo configs '
                             f'load {step.checkpoint} ({DEMO_BASE}): make '
                             'the two agree')
        self.echo(f'{what}: {step.checkpoint}')

    def _progress(self, what: str):
        marks = set()

        def report(done, total):
            tenth = done * 10 // total
            if tenth not in marks:
                marks.add(tenth)
                self.echo(f'{what}: iteration {done}/{total}')
        return report

    def train_and_test(self, row: Row) -> dict:
        """Train, count, evaluate: ``<row>/result.json`` (skipped if it
        exists)."""
        out = self.row_dir(row)
        result_file = osp.join(out, 'result.json')
        if osp.exists(result_file):
            self.echo(f'{row.key}: done before ({result_file})')
            with open(result_file) as f:
                return json.load(f)
        self.echo(f'{row.key}: training {row.config}')
        train = run_logged(train_command(row.config, out, self.gpus,
                                         self.ports[row.key]),
                           osp.join(out, 'train.log'), f'{row.key} training',
                           self._progress(row.key))
        ckpt = last_checkpoint(out)
        params = osp.join(out, 'params.json')
        run_logged([sys.executable, tool('count_params.py'), row.config,
                    '--json', params], osp.join(out, 'count_params.log'),
                   f'{row.key} count_params')
        deploy_cfg, deploy_ckpt = deploy_pair(row, ckpt)
        self.echo(f'{row.key}: testing {deploy_ckpt}')
        test_log = osp.join(out, 'test.log')
        run_logged(test_command(deploy_cfg, deploy_ckpt,
                                osp.join(out, 'test'), self.gpus,
                                self.ports[row.key]), test_log,
                   f'{row.key} testing')
        metrics = test_metrics(test_log)
        file = task_file(ckpt, row.name == 'full')
        result = dict(
            asdict(row), label=row.label, checkpoint=ckpt,
            deploy_config=deploy_cfg, deploy_checkpoint=deploy_ckpt,
            metrics=metrics, metric=primary_metric(metrics),
            task_file=file, task_file_mib=osp.getsize(file) / 2**20,
            peak_rss_mib=train['peak_rss_mib'], train_wall_s=train['wall_s'],
            **step_stats(train_scalars(out)), **trainable_share(params))
        with open(result_file, 'w') as f:
            json.dump(result, f, indent=2)
        metric = result['metric']
        self.echo(f'{row.key}: {metric} = {metrics.get(metric)}')
        return result

    def latencies(self, results: Dict[str, dict]) -> Dict[str, str]:
        """Merged-model inference latency into each ``<row>/latency.json``,
        after every training so that no run competes: the rows of one host
        in one process, timed in interleaved rounds (a slow spell of the
        machine hits all alike). A host with any row unmeasured is measured
        again as a whole. Returns the failures."""
        failures = {}
        for host in dict.fromkeys(r.host for r in self.plan.rows):
            rows = [r for r in self.plan.rows
                    if r.host == host and r.key in results]
            outs = [osp.join(self.row_dir(r), 'latency.json') for r in rows]
            if not rows or all(osp.exists(out) for out in outs):
                continue
            self.echo(f'latency ({host}): ' + ', '.join(r.key for r in rows))
            pairs = [arg for r in rows for arg in (
                results[r.key]['deploy_config'],
                results[r.key]['deploy_checkpoint'])]
            out = osp.join(self.work_dir, f'latency_{host}.json')
            try:
                run_logged([sys.executable, '-m', 'mmpeft.comparison',
                            'latency', *pairs, '--iters',
                            str(self.latency_iters), '--json', out],
                           osp.join(self.work_dir, f'latency_{host}.log'),
                           f'latency ({host})')
            except StepFailed as err:
                failures.update({r.key: str(err) for r in rows})
                continue
            with open(out) as f:
                for row_out, measured in zip(outs, json.load(f)):
                    with open(row_out, 'w') as g:
                        json.dump(measured, g, indent=2)
        for r in self.plan.rows:
            path = osp.join(self.row_dir(r), 'latency.json')
            if r.key in results and osp.exists(path):
                with open(path) as f:
                    results[r.key]['latency'] = json.load(f)
        return failures

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        os.makedirs(self.work_dir, exist_ok=True)
        self._parallel(self.pretrain, self.plan.pretrains)
        results, failures = {}, {}

        def one(row):
            try:
                results[row.key] = self.train_and_test(row)
            except StepFailed as err:
                failures[row.key] = str(err)
                self.echo(f'{row.key}: {err}')

        self._parallel(one, self.plan.rows)
        failures.update(self.latencies(results))
        doc = table_doc(self.plan, results, failures)
        write_outputs(doc, self.work_dir)
        return doc

    def _parallel(self, fn, items) -> None:
        if self.jobs <= 1 or len(items) <= 1:
            for item in items:
                fn(item)
            return
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(self.jobs) as pool:
            list(pool.map(fn, items))


def write_backbone_checkpoint(checkpoint: str, out: str) -> None:
    """The ``backbone.*`` weights of a whole-model checkpoint as a bare
    backbone state dict (weights only): what mmseg's VisionTransformer reads
    as its pretrained checkpoint."""
    from .engine.checkpoint_io import load_file
    from .engine.export import save_atomic
    state = load_file(checkpoint)['state_dict']
    bare = {k[len('backbone.'):]: v for k, v in state.items()
            if k.startswith('backbone.')}
    if not bare:
        raise StepFailed(f'{checkpoint} has no backbone.* weights')
    save_atomic(dict(state_dict=bare), out)


def deploy_pair(row: Row, checkpoint: str):
    """The config and checkpoint to evaluate: the merged deploy pair that
    AdapterMergeHook wrote, or the run's own for Full (nothing to merge)."""
    from .engine.export import companion_paths
    if row.name == 'full':
        return row.config, checkpoint
    paths = companion_paths(checkpoint)
    for key in ('deploy_config', 'deploy'):
        if not osp.exists(paths[key]):
            raise StepFailed(f'{row.key}: {paths[key]} is missing; '
                             'AdapterMergeHook writes it beside every '
                             'checkpoint')
    return paths['deploy_config'], paths['deploy']


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------
RATIOS = (('step_time_s', 'step_time'), ('memory_mib', 'memory'),
          ('latency_ms', 'latency'))


def table_doc(plan: Plan, results: Dict[str, dict],
              failures: Dict[str, str]) -> dict:
    """The JSON document: one entry per row, ratios to the Full row of the
    same host, and what failed."""
    rows = []
    for row in plan.rows:
        if row.key not in results:
            continue
        r = dict(results[row.key])
        r['memory_mib'] = r.get('gpu_memory_mib') or r.get('peak_rss_mib')
        r['memory_kind'] = 'GPU max allocated' if r.get('gpu_memory_mib') \
            else 'peak RSS of the training process'
        r['latency_ms'] = (r.get('latency') or {}).get('median_ms')
        rows.append(r)
    full = {r['host']: r for r in rows if r['name'] == 'full'}
    for r in rows:
        ref = full.get(r['host'])
        for value, name in RATIOS:
            r[f'{name}_vs_full'] = (r[value] / ref[value]) if (
                ref and r.get(value) and ref.get(value)) else None
    return dict(task=plan.task, rows=rows, failures=failures,
                written=time.strftime('%Y-%m-%d %H:%M:%S'),
                command=' '.join(sys.argv))


def _fmt(value, spec='.3f', none='-'):
    return none if value is None else format(value, spec)


def markdown(doc: dict) -> str:
    rows = doc['rows']
    metric = next((r['metric'] for r in rows if r.get('metric')), 'metric')
    lines = [
        f'| Method | Host | {metric} | Trainable (% of backbone) | '
        'Task file (MiB) | Step time (s, x Full) | Peak memory (MiB, '
        'x Full) | Latency merged (ms, x Full) |',
        '|---|---|---|---|---|---|---|---|'
    ]

    def with_ratio(r, value, ratio, spec):
        return f"{_fmt(r.get(value), spec)} ({_fmt(r[ratio], '.2f')}x)"

    for r in rows:
        lines.append(' | '.join((
            f"| {r['label']}", r['host'],
            _fmt(r['metrics'].get(r.get('metric'))),
            f"{r['trainable_params']:,} ({r['trainable_pct']:.2f}%)",
            f"{r['task_file_mib']:.2f}",
            with_ratio(r, 'step_time_s', 'step_time_vs_full', '.3f'),
            with_ratio(r, 'memory_mib', 'memory_vs_full', '.0f'),
            with_ratio(r, 'latency_ms', 'latency_vs_full', '.1f'))) + ' |')
    for key, err in doc['failures'].items():
        lines.append(f'| {key} | failed: {err} |||||||')
    kinds = sorted({r['memory_kind'] for r in rows})
    lines += ['', f'Peak memory: {"; ".join(kinds)}. Ratios are to the Full '
              'row of the same host, measured by the same command (a re-run '
              'keeps what was measured before). Task file: the adapter-only '
              'checkpoint (Full: the whole model\'s weights).']
    return '\n'.join(lines) + '\n'


def plot(doc: dict, path: str) -> None:
    """Metric against trainable parameters (% of backbone, log scale)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = [r for r in doc['rows'] if r.get('metric')]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:  # nothing trains in the backbone: no place on a log axis
        if r['trainable_pct'] == 0:
            ax.axhline(r['metrics'][r['metric']], color='grey', ls='--',
                       lw=1, label=f"{r['label']} ({r['host']}, 0%)")
    for host, marker in (('swin', 'o'), ('vit', 's')):
        pts = [r for r in rows if r['host'] == host and r['trainable_pct']]
        if not pts:
            continue
        ax.scatter([r['trainable_pct'] for r in pts],
                   [r['metrics'][r['metric']] for r in pts], marker=marker,
                   label=host)
        for r in pts:
            ax.annotate(r['label'], (r['trainable_pct'],
                                     r['metrics'][r['metric']]),
                        textcoords='offset points', xytext=(4, 4),
                        fontsize=8)
    ax.set_xscale('log')
    ax.set_xlabel('trainable parameters (% of backbone, log scale)')
    ax.set_ylabel(rows[0]['metric'] if rows else 'metric')
    ax.set_title(f'PEFT methods on {osp.basename(doc["task"])}')
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(doc: dict, work_dir: str) -> Dict[str, str]:
    paths = {ext: osp.join(work_dir, f'comparison.{ext}')
             for ext in ('json', 'md', 'png')}
    with open(paths['json'], 'w') as f:
        json.dump(doc, f, indent=2)
    with open(paths['md'], 'w') as f:
        f.write(f'`{doc["command"]}` ({doc["written"]})\n\n' + markdown(doc))
    if doc['rows']:
        plot(doc, paths['png'])
    return paths


# --------------------------------------------------------------------------
# latency (run as `python -m mmpeft.comparison latency CONFIG CHECKPOINT`)
# --------------------------------------------------------------------------
def measure_latency(pairs: Sequence[Tuple[str, str]], iters: int = 20,
                    warmup: int = 3) -> List[dict]:
    """Median milliseconds of ``model.test_step`` on the first test batch
    (data loading excluded) of each (config, checkpoint), on the GPU if
    there is one; the models take turns, one step each per round."""
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    from .benchmark.timing import timed
    from .engine.checkpoint_io import load_file
    from .engine.export import build_from_config
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    models = []
    for config, checkpoint in pairs:
        cfg = Config.fromfile(config)
        model = build_from_config(cfg)
        state = load_file(checkpoint)
        model.load_state_dict(state.get('state_dict', state), strict=True)
        batch = next(iter(Runner.build_dataloader(cfg.test_dataloader)))
        models.append((model.to(device).eval(), batch,
                       cfg.test_dataloader.get('batch_size', 1)))
    times = [[] for _ in models]
    with torch.no_grad():
        for round_ in range(warmup + iters):
            for samples, (model, batch, _) in zip(times, models):
                ms = timed(lambda: model.test_step(batch), device)
                if round_ >= warmup:
                    samples.append(ms)
    return [dict(median_ms=statistics.median(samples), iters=iters,
                 batch_size=batch_size, device=str(device),
                 threads=torch.get_num_threads(), interleaved=len(pairs))
            for samples, (_, _, batch_size) in zip(times, models)]


def _latency_main(argv: Sequence[str]) -> None:
    import argparse
    parser = argparse.ArgumentParser(
        prog='python -m mmpeft.comparison latency',
        description='Median test_step latency of models timed in turns '
        '(tools/compare.py runs this after every training).')
    parser.add_argument('pairs', nargs='+', metavar='CONFIG CHECKPOINT')
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--json', required=True, help='where to write it')
    args = parser.parse_args(argv)
    if len(args.pairs) % 2:
        parser.error('give a CHECKPOINT after every CONFIG')
    import mmpeft  # noqa: F401,F811  registers the backbones and hooks
    result = measure_latency(list(zip(args.pairs[::2], args.pairs[1::2])),
                             args.iters)
    with open(args.json, 'w') as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == '__main__':
    if sys.argv[1:2] != ['latency']:
        raise SystemExit('usage: python -m mmpeft.comparison latency CONFIG '
                         'CHECKPOINT [CONFIG CHECKPOINT ...] --json OUT (the '
                         'table: tools/compare.py)')
    _latency_main(sys.argv[2:])
