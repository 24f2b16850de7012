"""The comparison table: the JSON document (every seed's values, mean and
spread over seeds, paired intervals to Full and Fixed, ratios to Full, the
conditions each row was measured under), its markdown and the plots of the
metric against trainable parameters, peak memory and step time."""
import os
import os.path as osp
import statistics
import sys
import time
from typing import Dict, Optional

from .plan import Plan
from .stats import INTERVAL, mean_std, paired_difference, pareto_front

# The metric each kind of task is ranked by, first found first.
PRIMARY_METRICS = ('pascal_voc/mAP', 'coco/bbox_mAP', 'coco/segm_mAP',
                   'mIoU', 'dota/mAP')
# A row's mean host load differing from Full's by more than this (runnable
# processes: one core's worth) makes its step time not comparable.
LOAD_TOLERANCE = 1.0


def primary_metric(metrics: Dict[str, float]) -> Optional[str]:
    return next((k for k in PRIMARY_METRICS if k in metrics), None)


RATIOS = (('step_time_s', 'step_time'), ('memory_mib', 'memory'),
          ('latency_ms', 'latency'))


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _row(runs: Dict[int, dict]) -> dict:
    """One row of the document from its runs (one per seed)."""
    first = runs[min(runs)]
    metric = first.get('metric')
    values = {seed: r['metrics'][metric] for seed, r in sorted(runs.items())
              if r['metrics'].get(metric) is not None}
    mean, std = mean_std(values.values()) if values else (None, None)
    memory = [r.get('gpu_memory_mib') or r.get('peak_rss_mib')
              for r in runs.values()]
    conditions = [r['conditions'] for r in runs.values()]
    keys = ('name', 'key', 'host', 'config', 'label', 'trainable_params',
            'backbone_params', 'trainable_pct', 'task_file_mib')
    return dict(
        {k: first.get(k) for k in keys},
        lr=sorted({r['lr'] for r in runs.values()}),
        metric=metric, metric_values=values, metric_mean=mean,
        metric_std=std, n=len(values), seeds=sorted(runs),
        step_time_s=_mean(r.get('step_time_s') for r in runs.values()),
        memory_mib=_mean(memory),
        memory_kind='GPU max allocated' if first.get('gpu_memory_mib')
        else 'peak RSS of the training process',
        latency_ms=(first.get('latency') or {}).get('median_ms'),
        conditions=dict(
            parallel=sorted({p for c in conditions for p in c['parallel']}),
            threads=sorted({str(c['threads']) for c in conditions}),
            gpus=sorted({c['gpus'] for c in conditions}),
            load_mean=_mean(c['load_mean'] for c in conditions)),
        runs={str(seed): r for seed, r in sorted(runs.items())})


def condition_differences(row: dict, full: dict) -> list:
    """How the conditions ``row``'s trainings ran under differ from those
    of ``full`` (its step time is then not like for like)."""
    mine, ref = row['conditions'], full['conditions']
    found = []
    for key, what in (('parallel', 'tool runs at once'),
                      ('threads', 'OMP_NUM_THREADS'), ('gpus', 'GPUs')):
        if mine[key] != ref[key]:
            found.append(f'{what} {mine[key]} (Full: {ref[key]})')
    if (mine['load_mean'] is not None and ref['load_mean'] is not None
            and abs(mine['load_mean'] - ref['load_mean']) > LOAD_TOLERANCE):
        found.append(f'host load {mine["load_mean"]:.1f} (Full: '
                     f'{ref["load_mean"]:.1f})')
    return found


def table_doc(plan: Plan, results: Dict[str, Dict[int, dict]],
              failures: Dict[str, str], **info) -> dict:
    """The JSON document: one entry per row (its runs by seed), the
    differences to Full and Fixed of the same host with their intervals,
    ratios to Full, and what failed. ``info`` (seeds, options, the lr grid,
    step 1's source models) is kept as given."""
    rows = [_row(results[row.key]) for row in plan.rows
            if results.get(row.key)]
    refs = {(r['name'], r['host']): r for r in rows}
    for r in rows:
        for name in ('full', 'fixed'):
            ref = refs.get((name, r['host']))
            r[f'vs_{name}'] = None if ref is None or ref is r else \
                paired_difference(r['metric_values'], ref['metric_values'])
        full = refs.get(('full', r['host']))
        for value, name in RATIOS:
            r[f'{name}_vs_full'] = (r[value] / full[value]) if (
                full and r.get(value) and full.get(value)) else None
        r['conditions_differ'] = condition_differences(r, full) \
            if full else []
    return dict(task=plan.task, rows=rows, failures=failures,
                interval=INTERVAL, **info,
                written=time.strftime('%Y-%m-%d %H:%M:%S'),
                command=' '.join(sys.argv))


def _fmt(value, spec='.3f', none='-'):
    return none if value is None else format(value, spec)


def _diff(d: Optional[dict]) -> str:
    if d is None:
        return '-'
    if d['low'] is None:
        return f"{d['diff']:+.3f} (n={d['n']})"
    mark = ' *' if d['excludes_zero'] else ''
    return f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{mark}"


def _lr(r: dict, doc: dict) -> str:
    text = ', '.join(f'{lr:g}' for lr in r['lr'])
    return text + (' (grid)' if doc.get('grid', {}).get(r['key']) else '')


def markdown(doc: dict) -> str:
    rows = doc['rows']
    metric = next((r['metric'] for r in rows if r.get('metric')), 'metric')
    lines = [
        f'| Method | Host | lr | {metric} (mean ± std) | n | vs Fixed '
        '[95% CI] | vs Full [95% CI] | Trainable (% of backbone) | '
        'Task file (MiB) | Step time (s, x Full) | Peak memory (MiB, '
        'x Full) | Latency merged (ms, x Full) |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|'
    ]

    def with_ratio(r, value, ratio, spec, mark=''):
        return f"{_fmt(r.get(value), spec)} ({_fmt(r[ratio], '.2f')}x){mark}"

    for r in rows:
        std = '' if r['metric_std'] is None else f" ± {r['metric_std']:.3f}"
        lines.append(' | '.join((
            f"| {r['label']}", r['host'], _lr(r, doc),
            f"{_fmt(r['metric_mean'])}{std}", str(r['n']),
            _diff(r['vs_fixed']), _diff(r['vs_full']),
            f"{r['trainable_params']:,} ({r['trainable_pct']:.2f}%)",
            f"{r['task_file_mib']:.2f}",
            with_ratio(r, 'step_time_s', 'step_time_vs_full', '.3f',
                       ' †' if r['conditions_differ'] else ''),
            with_ratio(r, 'memory_mib', 'memory_vs_full', '.0f'),
            with_ratio(r, 'latency_ms', 'latency_vs_full', '.1f'))) + ' |')
    for key, err in doc['failures'].items():
        lines.append(f'| {key} | failed: {err} ||||||||||')
    kinds = sorted({r['memory_kind'] for r in rows})
    seeds = doc.get('seeds')
    lines += [
        '', f'Metric: mean ± standard deviation over the seeds '
        f'{seeds if seeds else ""} (n: how many finished). vs Fixed / vs '
        f'Full: the mean difference to that row of the same host and its '
        f'95% interval, {doc["interval"]} (the difference at each seed both '
        'have, Student t with n - 1 degrees of freedom); * the interval '
        'excludes 0. Peak memory: ' + '; '.join(kinds) + '. Ratios are to '
        'the Full row of the same host (step time, memory: means over '
        "seeds; latency: the first seed's merged model). Task file: the "
        "adapter-only checkpoint (Full: the whole model's weights)."
    ]
    marked = [r for r in rows if r['conditions_differ']]
    if marked:
        lines.append('')
        lines += [f"† {r['label']} ({r['host']}) trained under other "
                  f"conditions than Full: {'; '.join(r['conditions_differ'])}"
                  '. Its step time is not like for like; re-run both alone '
                  '(--jobs 1) to compare it.' for r in marked]
    return '\n'.join(lines) + '\n'


def _frontier_panel(ax, rows, cost_key, xlabel, hosts):
    for host, marker in hosts:
        pts = [r for r in rows if r['host'] == host
               and r.get(cost_key) is not None]
        if not pts:
            continue
        x = [r[cost_key] for r in pts]
        y = [r['metric_mean'] for r in pts]
        err = [r['metric_std'] or 0 for r in pts]
        ax.errorbar(x, y, yerr=err, fmt=marker, capsize=3, label=host)
        front = sorted(pareto_front(list(zip(x, y))), key=lambda i: x[i])
        ax.step([x[i] for i in front], [y[i] for i in front], where='post',
                ls='--', lw=1, color='black', alpha=0.6)
        ax.scatter([x[i] for i in front], [y[i] for i in front], s=160,
                   facecolors='none', edgecolors='black', linewidths=1)
        for r in pts:
            ax.annotate(r['label'], (r[cost_key], r['metric_mean']),
                        textcoords='offset points', xytext=(4, 4),
                        fontsize=7)
    ax.set_xlabel(xlabel)
    ax.grid(True, alpha=0.3)


def plot(doc: dict, path: str) -> None:
    """Three panels of the metric (mean, error bars one std over seeds):
    against trainable parameters (% of backbone, log scale), against peak
    memory and against step time (x Full); the last two mark each host's
    Pareto front (no other row is cheaper and better; dashed, circled)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = [r for r in doc['rows'] if r.get('metric_mean') is not None]
    hosts = (('swin', 'o'), ('vit', 's'))
    fig, axes = plt.subplots(1, 3, figsize=(17, 5), sharey=True)
    ax = axes[0]
    for r in rows:  # nothing trains in the backbone: no place on a log axis
        if r['trainable_pct'] == 0:
            ax.axhline(r['metric_mean'], color='grey', ls='--', lw=1,
                       label=f"{r['label']} ({r['host']}, 0%)")
    for host, marker in hosts:
        pts = [r for r in rows if r['host'] == host and r['trainable_pct']]
        if not pts:
            continue
        ax.errorbar([r['trainable_pct'] for r in pts],
                    [r['metric_mean'] for r in pts],
                    yerr=[r['metric_std'] or 0 for r in pts], fmt=marker,
                    capsize=3, label=host)
        for r in pts:
            ax.annotate(r['label'], (r['trainable_pct'], r['metric_mean']),
                        textcoords='offset points', xytext=(4, 4),
                        fontsize=7)
    ax.set_xscale('log')
    ax.set_xlabel('trainable parameters (% of backbone, log scale)')
    ax.set_ylabel(rows[0]['metric'] if rows else 'metric')
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    _frontier_panel(axes[1], rows, 'memory_vs_full',
                    'peak memory (x Full)', hosts)
    _frontier_panel(axes[2], rows, 'step_time_vs_full',
                    'training step time (x Full)', hosts)
    fig.suptitle(f'PEFT methods on {osp.basename(doc["task"])} (error bars: '
                 'std over seeds; dashed: Pareto front)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(doc: dict, work_dir: str) -> Dict[str, str]:
    """comparison.{json,md,png}, each written whole; with no row to plot
    the old plot is removed (it would show an older table)."""
    from .steps import write_json
    paths = {ext: osp.join(work_dir, f'comparison.{ext}')
             for ext in ('json', 'md', 'png')}
    write_json(paths['json'], doc)
    tmp = paths['md'] + '.tmp'
    with open(tmp, 'w') as f:
        f.write(f'`{doc["command"]}` ({doc["written"]})\n\n' + markdown(doc))
    os.replace(tmp, paths['md'])
    if doc['rows']:
        plot(doc, paths['png'])
    elif osp.exists(paths['png']):
        os.remove(paths['png'])
    return paths
