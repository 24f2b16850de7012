"""The comparison table: the JSON document with ratios to Full, its
markdown and the plot of metric against trainable parameters."""
import json
import os.path as osp
import sys
import time
from typing import Dict, Optional

from .plan import Plan

# The metric each kind of task is ranked by, first found first.
PRIMARY_METRICS = ('pascal_voc/mAP', 'coco/bbox_mAP', 'coco/segm_mAP',
                   'mIoU', 'dota/mAP')


def primary_metric(metrics: Dict[str, float]) -> Optional[str]:
    return next((k for k in PRIMARY_METRICS if k in metrics), None)


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
