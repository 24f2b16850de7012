"""Runs a comparison plan: step 1 of the demo, the learning-rate grid if
asked, every (method, seed) run's training, counting and test (side by side
with ``jobs``), then the latencies. Each run's result is kept in its own
folder (``<key>/lr<lr>/seed<seed>/result.json``) so that a re-run after a
kill does only the runs that are missing; a result file that cannot be read
is run again."""
import argparse
import json
import os
import os.path as osp
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

from .plan import (ComparisonError, Plan, Row, config_lr, task_config,
                   validation_split_error)
from .report import primary_metric, table_doc, write_outputs
from .source import ensure_source
from .steps import (StepFailed, deploy_pair, last_checkpoint, read_json,
                    run_logged, step_stats, task_file, test_command,
                    test_metrics, tool, train_command, train_scalars,
                    trainable_share, val_as_test_config, write_json)

# What a result.json must hold to be used; without it the run goes again.
RESULT_KEYS = ('settings', 'metrics', 'metric', 'deploy_config',
               'deploy_checkpoint', 'trainable_params', 'trainable_pct',
               'task_file_mib', 'step_time_s', 'peak_rss_mib', 'conditions')
PARAMS_KEYS = ('groups', 'denominators')


@dataclass(frozen=True)
class Run:
    """One training of a row: its seed and learning rate; ``validate``:
    also score it on the validation split (the lr grid's trials)."""
    row: Row
    seed: int
    lr: float
    validate: bool = False

    @property
    def name(self) -> str:
        return f'{self.row.key} seed {self.seed} lr {self.lr:g}'

    @property
    def subdir(self) -> str:
        return osp.join(self.row.key, f'lr{self.lr:g}', f'seed{self.seed}')


def parse_cfg_options(options: Sequence[str]) -> dict:
    """``KEY=VALUE`` strings as tools/train.py reads them."""
    from mmengine.config import DictAction
    namespace = argparse.Namespace(options={})
    if options:
        DictAction([], 'options')(None, namespace, list(options))
    return namespace.options


class Comparison:
    """Runs a :class:`Plan` into ``work_dir`` and tabulates it.

    Args:
        seeds: every row runs once per seed (``randomness.seed``).
        cfg_options: ``KEY=VALUE`` strings given to every training and test
            (tools/train.py, test.py, count_params.py ``--cfg-options``).
        lrs: learning rate per method name or row key (``--lr``); the
            others keep their config's.
        lr_grid: factors of each row's learning rate tried on the first seed
            and chosen by the validation metric (``--lr-grid``); needs a
            validation split apart from the test split.
    """

    def __init__(self, plan: Plan, work_dir: str, gpus: int = 0,
                 jobs: int = 1, latency_iters: int = 20, echo=print,
                 seeds: Sequence[int] = (0, ), cfg_options: Sequence[str] = (),
                 lrs: Optional[Dict[str, float]] = None,
                 lr_grid: Sequence[float] = ()):
        self.plan, self.work_dir = plan, osp.abspath(work_dir)
        self.gpus, self.jobs, self.latency_iters = gpus, jobs, latency_iters
        self.seeds, self.cfg_options = list(seeds), list(cfg_options)
        self.lrs, self.lr_grid = dict(lrs or {}), list(lr_grid)
        self._echo, self._lock = echo, threading.Lock()
        self._next_port = int(os.environ.get('PORT', 29500))
        self._active, self._seen = set(), {}
        self._row_locks = {row.key: threading.Lock() for row in plan.rows}
        self.base_lrs: Dict[str, float] = {}  # set by check()
        self.grid: Dict[str, dict] = {}
        self.sources: Dict[str, dict] = {}

    def echo(self, text: str) -> None:
        with self._lock:
            self._echo(f'[{time.strftime("%H:%M:%S")}] {text}')

    def port(self) -> int:
        """A torchrun rendezvous port of its own per tool run (from $PORT,
        as dist_train.sh): --jobs runs them side by side."""
        with self._lock:
            self._next_port += 1
            return self._next_port - 1

    def run_dir(self, run: Run) -> str:
        return osp.join(self.work_dir, run.subdir)

    # ------------------------------------------------------------ the plan
    def check(self) -> None:
        """Refuse, before anything runs, what cannot work: --lr for a method
        not in the table, --lr-grid without a validation split, runs of this
        work dir made with other settings (nothing is overwritten)."""
        options = parse_cfg_options(self.cfg_options)
        names = {r.key for r in self.plan.rows} | {
            r.name for r in self.plan.rows}
        unknown = sorted(set(self.lrs) - names)
        if unknown:
            raise ComparisonError(
                f'--lr names {unknown}, not rows of this table: '
                f'{sorted(names)}.')
        bad = [lr for lr in [*self.lrs.values(), *self.lr_grid] if lr <= 0]
        if bad:
            raise ComparisonError(f'learning rates and --lr-grid factors must'
                                  f' be positive, got {bad}.')
        for row in self.plan.rows:
            cfg = task_config(row.config, options)
            lr = self.lrs.get(row.key, self.lrs.get(row.name))
            self.base_lrs[row.key] = config_lr(cfg, row.config) \
                if lr is None else lr
            if self.lr_grid:
                why = validation_split_error(cfg, row.config)
                if why:
                    raise ComparisonError(f'--lr-grid refused: {why}')
        self.check_settings(
            self.grid_runs() if self.lr_grid else self.table_runs())

    def table_runs(self) -> List[Run]:
        """Seed after seed, so that an interrupted table has whole seeds."""
        return [Run(row, seed, self.row_lr(row)) for seed in self.seeds
                for row in self.plan.rows if self.row_lr(row) is not None]

    def grid_runs(self) -> List[Run]:
        return [Run(row, self.seeds[0], self.base_lrs[row.key] * factor,
                    validate=True) for row in self.plan.rows
                for factor in self.lr_grid]

    def row_lr(self, row: Row) -> Optional[float]:
        """The row's learning rate: the grid's choice (None if every trial
        failed), else --lr's or its config's."""
        if self.lr_grid:
            return self.grid.get(row.key, {}).get('chosen_lr')
        return self.base_lrs[row.key]

    def settings(self, run: Run) -> dict:
        """What a run's results depend on; a re-run uses its results only if
        these are the same."""
        return dict(task=self.plan.task, config=run.row.config,
                    cfg_options=self.cfg_options, seed=run.seed, lr=run.lr,
                    gpus=self.gpus)

    def check_settings(self, runs: Sequence[Run]) -> None:
        clashes = []
        for run in runs:
            path = osp.join(self.run_dir(run), 'settings.json')
            saved, _ = read_json(path)
            if saved is not None and saved != self.settings(run):
                changed = sorted(k for k in set(saved) | set(
                    self.settings(run)) if saved.get(k) != self.settings(
                        run).get(k))
                clashes.append(f'{path} ({", ".join(changed)})')
        if clashes:
            raise ComparisonError(
                f'{len(clashes)} run(s) in {self.work_dir} were made with '
                f'other settings: {"; ".join(clashes[:3])}. Use another '
                '--work-dir, or remove those runs to train them again.')

    # ---------------------------------------------------------------- runs
    def _tool(self, label: str, cmd, log, what, progress=None) -> dict:
        """:func:`run_logged` in the plan's directory, counted among the
        comparison's tool runs at work; adds ``parallel``: how many there
        were while it ran (a training's condition, with the host load)."""
        def note():
            for name in self._active:
                self._seen.setdefault(name, set()).add(len(self._active))
        with self._lock:
            self._active.add(label)
            note()
        try:
            done = run_logged(cmd, log, what, progress, cwd=self.plan.cwd)
        finally:
            with self._lock:
                self._active.discard(label)
                note()
                seen = self._seen.pop(label)
        return dict(done, parallel=sorted(seen))

    def execute(self, run: Run) -> dict:
        """Train, count, evaluate one run into ``result.json`` (used again
        when it is whole and made with the same settings)."""
        out = self.run_dir(run)
        result_file = osp.join(out, 'result.json')
        settings = self.settings(run)
        result, why = read_json(result_file, RESULT_KEYS)
        if result is not None and result['settings'] == settings:
            if run.validate and 'val_metrics' not in result:
                result['val_metrics'] = self.score(run, result, 'val')
                write_json(result_file, result)
            self.echo(f'{run.name}: done before ({result_file})')
            return result
        if result is not None:
            why = 'made with other settings'
        if why != 'missing':
            self.echo(f'{run.name}: {result_file} {why}: running it again')
        write_json(osp.join(out, 'settings.json'), settings)
        self.echo(f'{run.name}: training {run.row.config}')
        options = [*self.cfg_options, f'randomness.seed={run.seed}',
                   f'optim_wrapper.optimizer.lr={run.lr!r}']
        train = self._tool(
            f'train {run.name}', train_command(run.row.config, out, self.gpus, self.port(),
                                 options), osp.join(out, 'train.log'),
            f'{run.name} training', self._progress(run.name))
        ckpt = last_checkpoint(out)
        deploy_cfg, deploy_ckpt = deploy_pair(run.row, ckpt)
        result = dict(
            asdict(run.row), label=run.row.label, seed=run.seed, lr=run.lr,
            settings=settings, checkpoint=ckpt, deploy_config=deploy_cfg,
            deploy_checkpoint=deploy_ckpt)
        cpu = [train.get('cpu_s', 0.0)]
        result['metrics'] = self.score(run, result, 'test', cpu)
        if run.validate:
            result['val_metrics'] = self.score(run, result, 'val', cpu)
        file = task_file(ckpt, run.row.name == 'full')
        conditions = dict(
            parallel=train['parallel'],
            threads=os.environ.get('OMP_NUM_THREADS', 'unset'),
            cpus=os.cpu_count(), gpus=self.gpus,
            load_mean=train['load_mean'], load_max=train['load_max'])
        result.update(
            metric=primary_metric(result['metrics']), task_file=file,
            task_file_mib=osp.getsize(file) / 2**20,
            peak_rss_mib=train['peak_rss_mib'], train_wall_s=train['wall_s'],
            cpu_s=sum(cpu),
            conditions=conditions, **step_stats(train_scalars(out)),
            **trainable_share(self.count(run.row)))
        write_json(result_file, result)
        metric = result['metric']
        self.echo(f'{run.name}: {metric} = {result["metrics"].get(metric)}')
        return result

    def score(self, run: Run, result: dict, split: str,
              cpu: Optional[list] = None) -> dict:
        """tools/test.py on the merged model: the test split, or the
        validation split (``val``) through a config that tests on it; its
        CPU seconds are added to ``cpu``."""
        out = self.run_dir(run)
        config = result['deploy_config']
        if split == 'val':
            config = val_as_test_config(config,
                                        osp.join(out, 'val_as_test.py'))
        self.echo(f'{run.name}: testing on the {split} split')
        log = osp.join(out, f'{split}.log')
        done = self._tool(f'{split} {run.name}', test_command(
            config, result['deploy_checkpoint'], osp.join(out, split),
            self.gpus, self.port(), self.cfg_options), log,
            f'{run.name} {split}')
        if cpu is not None:
            cpu.append(done.get('cpu_s', 0.0))
        return test_metrics(log)

    def count(self, row: Row) -> str:
        """``<row>/params.json`` from tools/count_params.py, once per row
        (every seed and lr trains the same parameters)."""
        path = osp.join(self.work_dir, row.key, 'params.json')
        with self._row_locks[row.key]:
            if read_json(path, PARAMS_KEYS)[0] is None:
                self._tool(f'count {row.key}', [
                    sys.executable, tool('count_params.py'), row.config,
                    '--json', path,
                    *(['--cfg-options', *self.cfg_options]
                      if self.cfg_options else [])
                ], osp.join(self.work_dir, row.key, 'count_params.log'),
                           f'{row.key} count_params')
        return path

    def _progress(self, what: str):
        marks = set()

        def report(done, total):
            tenth = done * 10 // max(total, 1)
            if tenth not in marks:
                marks.add(tenth)
                self.echo(f'{what}: iteration {done}/{total}')
        return report

    def _attempt(self, run: Run, results: dict, failures: dict) -> None:
        """One run; a failure of any kind is recorded, never fatal."""
        try:
            results[run] = self.execute(run)
        except Exception as err:  # noqa: B902 -- reported in the table
            failures[run.name] = (str(err) if isinstance(err, StepFailed)
                                  else f'{type(err).__name__}: {err}')
            self.echo(f'{run.name}: failed: {failures[run.name]}')

    # ------------------------------------------------------------ the grid
    def choose_lrs(self, failures: dict) -> None:
        """Each row's learning rate: the grid's value with the best
        validation metric on the first seed."""
        trials = {}
        self._parallel(lambda run: self._attempt(run, trials, failures),
                       self.grid_runs())
        for row in self.plan.rows:
            scores = {}
            for run, result in trials.items():
                if run.row == row:
                    val = result['val_metrics']
                    scores[run.lr] = val.get(primary_metric(val))
            tried = {lr: v for lr, v in scores.items() if v is not None}
            self.grid[row.key] = dict(
                base_lr=self.base_lrs[row.key], factors=self.lr_grid,
                val_metric=[[lr, v] for lr, v in sorted(scores.items())],
                chosen_lr=max(tried, key=tried.get) if tried else None)
            if tried:
                self.echo(f'{row.key}: lr {self.grid[row.key]["chosen_lr"]:g}'
                          ' chosen on the validation split')

    # ------------------------------------------------------------ latency
    def latencies(self, results: Dict[str, Dict[int, dict]]
                  ) -> Dict[str, str]:
        """Merged-model inference latency into each ``<row>/latency.json``
        (of the row's first seed), after every training so that no run
        competes: the rows of one host in one process, timed in interleaved
        rounds (a slow spell of the machine hits all alike). A host with any
        row unmeasured is measured again as a whole. Returns the failures."""
        failures = {}
        for host in dict.fromkeys(r.host for r in self.plan.rows):
            rows = [r for r in self.plan.rows
                    if r.host == host and results.get(r.key)]
            firsts = [results[r.key][min(results[r.key])] for r in rows]
            outs = [osp.join(self.work_dir, r.key, 'latency.json')
                    for r in rows]
            measured = [read_json(out, ('median_ms', 'run'))[0]
                        for out in outs]
            if not rows or all(
                    m is not None and m['run'] == _run_id(first)
                    for m, first in zip(measured, firsts)):
                continue
            self.echo(f'latency ({host}): ' + ', '.join(r.key for r in rows))
            pairs = [arg for first in firsts for arg in (
                first['deploy_config'], first['deploy_checkpoint'])]
            out = osp.join(self.work_dir, f'latency_{host}.json')
            try:
                self._tool(f'latency {host}', [
                    sys.executable, '-m', 'mmpeft.comparison.latency', *pairs,
                    '--iters', str(self.latency_iters), '--json', out
                ], osp.join(self.work_dir, f'latency_{host}.log'),
                           f'latency ({host})')
                with open(out) as f:
                    timings = json.load(f)
                for row_out, first, timing in zip(outs, firsts, timings):
                    write_json(row_out, dict(timing, run=_run_id(first)))
            except (StepFailed, OSError, ValueError, TypeError) as err:
                failures.update({f'{r.key} latency': str(err) for r in rows})
        for r in self.plan.rows:
            if not results.get(r.key):
                continue
            latency, _ = read_json(
                osp.join(self.work_dir, r.key, 'latency.json'), ('median_ms',))
            if latency is not None:
                for result in results[r.key].values():
                    result['latency'] = latency
        return failures

    # ------------------------------------------------------------------ run
    def prepare_sources(self) -> None:
        """Step 1 of the demo: each host's source model, from the cache or
        trained (mmpeft/comparison/source.py)."""
        for step in self.plan.pretrains:
            self.sources[step.host] = ensure_source(
                step, run_logged, self.echo, self.gpus, self.port(),
                self._progress(f'step 1 ({step.host})'))

    def run(self) -> dict:
        """Everything, then the table (written whatever happened, from the
        results there are, so that no older table is left standing)."""
        self.check()
        os.makedirs(self.work_dir, exist_ok=True)
        done: Dict[Run, dict] = {}
        failures: Dict[str, str] = {}
        results: Dict[str, Dict[int, dict]] = {}
        try:
            self.prepare_sources()
            if self.lr_grid:
                self.choose_lrs(failures)
                self.check_settings(self.table_runs())
            self._parallel(lambda run: self._attempt(run, done, failures),
                           self.table_runs())
            results = _by_row(done)
            failures.update(self.latencies(results))
        except StepFailed as err:  # step 1: every row needs it
            failures['step 1'] = str(err)
            raise
        finally:
            doc = table_doc(self.plan, results or _by_row(done), failures,
                            seeds=self.seeds, cfg_options=self.cfg_options,
                            grid=self.grid, lr_grid=self.lr_grid,
                            sources=self.sources)
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


def _by_row(done: Dict[Run, dict]) -> Dict[str, Dict[int, dict]]:
    results = {}
    for run, result in done.items():
        results.setdefault(run.row.key, {})[run.seed] = result
    return results


def _run_id(result: dict) -> dict:
    return dict(seed=result['seed'], lr=result['lr'])
