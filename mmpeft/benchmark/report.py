"""The results of one run as a JSON document, markdown tables and a chart."""
import os
import platform
from typing import List, Optional

import torch

from .families import Family
from .run import Setting

RATIO_METRICS = ('train_ms', 'train_peak_mib', 'infer_ms', 'infer_peak_mib',
                 'backbone_trainable_params', 'backbone_gflops')


def add_ratios(results: dict) -> None:
    """``ratios[metric]`` = value / the value of the variant's reference
    (full fine-tuning with the same attention kernel; ``full`` unless
    ``result['reference']`` says otherwise)."""
    for result in results.values():
        ref = results[result.get('reference', 'full')]
        result['ratios'] = {
            metric: result[metric] / ref[metric]
            for metric in RATIO_METRICS
            if result.get(metric) is not None and ref.get(metric)
        }


def check_targets(family: Family, results: dict) -> List[dict]:
    """Each target of ``family`` whose variant was measured, met or not."""
    checked = []
    for target in family.targets:
        result = results.get(target.variant)
        if result is None or target.metric not in result.get('ratios', {}):
            continue
        ratio = result['ratios'][target.metric]
        checked.append(
            dict(target=target.name, variant=target.variant,
                 metric=target.metric, ratio=ratio, limit=target.limit,
                 met=ratio <= target.limit))
    return checked


def environment() -> dict:
    """Where the numbers came from."""
    import mmengine
    info = dict(torch=torch.__version__, mmengine=mmengine.__version__,
                python=platform.python_version(), machine=platform.machine(),
                torch_threads=torch.get_num_threads(), cpus=os.cpu_count())
    if torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name()
    return info


def load_average() -> Optional[List[float]]:
    """The 1, 5 and 15 minute load averages, where the OS has them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def report(setting: Setting, results: dict, command: str, load_before,
           load_after) -> dict:
    """The JSON document of one run."""
    add_ratios(results)
    return dict(
        command=command,
        scope=setting.scope,
        source=setting.source,
        family=setting.family.name,
        img_size=list(setting.img_size),
        batch_size=setting.batch_size,
        device=str(setting.device),
        amp=setting.amp,
        repeats=setting.repeats,
        warmup=setting.warmup,
        timer=setting.timer,
        measure=list(setting.measure),
        memory_method=('cuda max_memory_allocated' if setting.device.type ==
                       'cuda' else 'torch.profiler CPU allocation events'),
        environment=environment(),
        load_average_before=load_before,
        load_average_after=load_after,
        notes=setting.notes,
        reference='full',
        variants=results,
        targets=check_targets(setting.family, results),
    )


METRIC_LABELS = dict(
    train_ms='train step time',
    train_peak_mib='train peak memory',
    infer_ms='inference time',
    infer_peak_mib='inference peak memory',
    backbone_trainable_params='trainable params')

def _num(value: float) -> str:
    """Three significant digits or more, never scientific."""
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f'{value:.{digits}f}'


def _ratio_cell(result, metric):
    value = result.get(metric)
    if value is None:
        return '-'
    ratio = result['ratios'].get(metric)
    return f'{_num(value)} ({ratio:.2f}x)' if ratio is not None else \
        _num(value)


def markdown(doc: dict) -> str:
    """The tables of one run, ratios to full fine-tuning in brackets (to
    full fine-tuning with the same attention kernel where a row says
    ``(/ full_<kernel>)``)."""
    lines = [
        f"**{doc['family']}**, {doc['scope']} scope ({doc['source']}), "
        f"{doc['img_size'][0]}x{doc['img_size'][1]}, batch "
        f"{doc['batch_size']}, {doc['device']}, amp "
        f"{doc['amp'] or 'off'}, {doc['timer']} time, median of "
        f"{doc['repeats']}, {doc['environment']['torch_threads']} threads, "
        "load "
        f"{doc['load_average_before']} -> {doc['load_average_after']}", '',
        '| variant | trainable backbone params | backbone params | '
        'train step ms | train peak MiB | inference ms | inference peak MiB '
        '| backbone GFLOPs/img |',
        '|---|---:|---:|---:|---:|---:|---:|---:|'
    ]
    for name, r in doc['variants'].items():
        trainable = r['backbone_trainable_params']
        params = '-' if trainable is None else (
            f'{trainable / 1e6:.3f}M '
            f"({100 * trainable / r['backbone_params']:.2f}%)")
        reference = r.get('reference', 'full')
        label = name if reference == 'full' else f'{name} (/ {reference})'
        lines.append(
            f"| {label} | {params} | {r['backbone_params'] / 1e6:.2f}M | "
            f"{_ratio_cell(r, 'train_ms')} | "
            f"{_ratio_cell(r, 'train_peak_mib')} | "
            f"{_ratio_cell(r, 'infer_ms')} | "
            f"{_ratio_cell(r, 'infer_peak_mib')} | "
            f"{_num(r['backbone_gflops'])} |")
    if doc['targets']:
        lines += ['', '| target | ratio | limit | met |',
                  '|---|---:|---:|---|']
        for t in doc['targets']:
            lines.append(f"| {t['target']} ({t['variant']}) | "
                         f"{t['ratio']:.3f} | {t['limit']:.2f} | "
                         f"{'yes' if t['met'] else 'NO'} |")
    audited = {name: r for name, r in doc['variants'].items()
               if 'backbone_optimizer' in r}
    if audited:
        lines += [
            '', '| variant | backbone grads MiB | backbone params in '
            'optimizer | with state | state MiB | frozen params with grad |',
            '|---|---:|---:|---:|---:|---:|'
        ]
    for name, r in audited.items():
        opt = r['backbone_optimizer']
        lines.append(
            f"| {name} | {_num(r['backbone_grad_mib'])} | "
            f"{opt['params_in_groups']} | {opt['params_with_state']} | "
            f"{_num(opt['state_mib'])} | {r['frozen_params_with_grad']} |")
    lines += [f'\n{note}' for note in doc['notes']]
    return '\n'.join(lines)


def plot(doc: dict, path: str) -> None:
    """Grouped bars: each metric of each variant as a ratio to full."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = list(doc['variants'])
    metrics = list(METRIC_LABELS)
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names)), 4))
    for i, metric in enumerate(metrics):
        values = [doc['variants'][n]['ratios'].get(metric, float('nan'))
                  for n in names]
        ax.bar([x + (i - (len(metrics) - 1) / 2) * width
                for x in range(len(names))], values, width,
               label=METRIC_LABELS[metric])
    ax.axhline(1.0, color='black', linewidth=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, ha='right')
    ax.set_ylabel('ratio to full fine-tuning')
    ax.set_title(f"{doc['family']} ({doc['source']}), "
                 f"{doc['img_size'][0]}x{doc['img_size'][1]} batch "
                 f"{doc['batch_size']}, {doc['device']}")
    ax.legend(fontsize='small')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cost_cell(result: dict, metric: str) -> str:
    value = result.get(metric)
    if value is None:
        return '-'
    reference = result.get('reference', 'full')
    of = '' if reference == 'full' else f' of {reference}'
    return f"{_num(value)} ({result['ratios'][metric]:.2f}x{of})"


def frontier_markdown(docs: List[dict]) -> str:
    """One table of every method's training cost across the runs ``docs``
    (one JSON document per family, e.g. Swin-T and ViT-S): per run, the
    trainable backbone parameters, the step time and the peak memory, ratios
    to full fine-tuning with the same attention kernel. Rows are matched by
    the variants' ``row`` (``lora_swin`` and ``lora_vit`` are ``lora``); a
    row only one run has comes after that run's previous row."""
    rows: List[str] = []
    for doc in docs:
        previous = None
        for name, r in doc['variants'].items():
            if r.get('train_ms') is None:
                continue
            row = r.get('row', name)
            if row not in rows:
                rows.insert(rows.index(previous) + 1 if previous else 0, row)
            previous = row
    by_row = [{r.get('row', name): r for name, r in doc['variants'].items()}
              for doc in docs]
    head = '| method |' + ''.join(
        f" {doc['source']} trainable | {doc['source']} step ms | "
        f"{doc['source']} peak MiB |" for doc in docs)
    lines = [head, '|---|' + '---:|---:|---:|' * len(docs)]
    for row in rows:
        cells = []
        for results in by_row:
            r = results.get(row)
            if r is None or r.get('train_ms') is None:
                cells += ['', '', '']
                continue
            trainable = r['backbone_trainable_params']
            cells += [f"{trainable / 1e6:.3f}M "
                      f"({100 * trainable / r['backbone_params']:.2f}%)",
                      _cost_cell(r, 'train_ms'),
                      _cost_cell(r, 'train_peak_mib')]
        lines.append(f'| {row} | ' + ' | '.join(cells) + ' |')
    if any(r.get('reference', 'full') != 'full' for doc in docs
           for r in doc['variants'].values()):
        lines += ['', 'Ratios are to full fine-tuning (`full`) unless a cell '
                  'names another reference: `full_<kernel>` is full '
                  'fine-tuning with the attention kernel that row\'s host '
                  'runs (its own ratios are to `full`).']
    return '\n'.join(lines)
