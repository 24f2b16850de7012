"""Runs a comparison plan: step 1 of the demo, then every method's
training, counting and test (side by side with ``jobs``), then the
latencies, each result kept so that a re-run skips it."""
import json
import os
import os.path as osp
import sys
import threading
import time
from dataclasses import asdict
from typing import Dict

from .plan import DEMO_BASE, Plan, Pretrain, Row
from .report import primary_metric, table_doc, write_outputs
from .steps import (StepFailed, deploy_pair, last_checkpoint, run_logged,
                    step_stats, task_file, test_command, test_metrics, tool,
                    train_command, train_scalars, trainable_share,
                    write_backbone_checkpoint)


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
                run_logged([sys.executable, '-m',
                            'mmpeft.comparison.latency', *pairs, '--iters',
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
