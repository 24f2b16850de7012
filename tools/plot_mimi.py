"""Draw MiMi's neuron allocation: live neurons per adapter after each round.

Reads WORK_DIR/mimi_prune.jsonl (written by MiMiPruneHook; a resumed run
appends to it, and the last record of each round wins) and writes a PNG with
two panels over the adapters in model order: the live neurons, and the
fraction of each adapter's initial neurons that is left.

    python tools/plot_mimi.py work_dirs/mimi_maskrcnn_swinb_coco [--out a.png]
"""
import argparse
import json
import os.path as osp
import re
from typing import Dict, List, Optional, Tuple

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def load_rounds(path: str) -> List[dict]:
    """One record per round, in round order (last record of a round wins)."""
    by_round: Dict[int, dict] = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                by_round[record['round']] = record
    if not by_round:
        raise ValueError(f'{path} holds no pruning record.')
    return [by_round[r] for r in sorted(by_round)]


def _label(name: str) -> Tuple[str, Optional[int]]:
    """'backbone.stages.2.blocks.7.ffn_adapter' -> ('s2.b7.ffn', 2)."""
    match = re.search(r'stages\.(\d+)\.blocks\.(\d+)\.(\w+)_adapter$', name)
    if match is None:
        return name, None
    return f's{match[1]}.b{match[2]}.{match[3]}', int(match[1])


def plot(rounds: List[dict], out: str) -> None:
    """Per adapter, one bar per round drawn over the previous ones (widths
    only shrink, so each round shows as a band: its top is that round's
    width), live neurons above, fraction of the initial neurons below."""
    names, stages = zip(*(_label(n) for n in rounds[0]['names']))
    initial = rounds[0]['initial_widths']
    x = list(range(len(names)))
    fig, (ax_abs, ax_rel) = plt.subplots(
        2, 1, figsize=(max(8, 0.22 * len(names) + 3), 7), sharex=True)
    colours = plt.cm.viridis_r([0.15 + 0.85 * i / max(len(rounds) - 1, 1)
                                for i in range(len(rounds))])
    for record, colour in zip(rounds, colours):
        label = (f"round {record['round']} (epoch {record['epoch']}, iter "
                 f"{record['iter']}): compression {record['compression']:.1f}"
                 f", {sum(record['widths'])} neurons")
        ax_abs.bar(x, record['widths'], width=0.8, color=colour, label=label)
        kept = [w / i if i else 0.0 for w, i in zip(record['widths'], initial)]
        ax_rel.bar(x, kept, width=0.8, color=colour)
    # Stage boundaries and names.
    for i in range(1, len(x)):
        if stages[i] != stages[i - 1]:
            for ax in (ax_abs, ax_rel):
                ax.axvline(i - 0.5, color='0.5', lw=0.8, ls='--')
    for stage in sorted({s for s in stages if s is not None}):
        members = [i for i, s in enumerate(stages) if s == stage]
        ax_abs.text((members[0] + members[-1]) / 2, 1.01, f'stage {stage}',
                    transform=ax_abs.get_xaxis_transform(), ha='center',
                    va='bottom', fontsize=9)
    ax_abs.set_ylabel('live neurons')
    ax_abs.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.005, 1.0))
    # 'schedule' is absent from logs written before the 'rounds' schedule.
    schedule = rounds[-1].get('schedule', 'within')
    ax_abs.set_title(f"MiMi ('{schedule}' schedule): live hidden neurons per "
                     'adapter (top of each colour: after that round)', pad=18)
    ax_rel.set_ylabel('fraction of initial neurons')
    ax_rel.set_ylim(0, 1.02)
    ax_rel.set_xticks(x)
    ax_rel.set_xticklabels(names, rotation=90, fontsize=7)
    ax_rel.set_xlim(-0.6, len(x) - 0.4)
    ax_rel.set_xlabel('adapter (stage.block.slot)')
    fig.tight_layout()
    fig.savefig(out, dpi=120, bbox_inches='tight')
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dir', help='work dir of a MiMi training run')
    parser.add_argument('--out', help='PNG path (default: '
                        'WORK_DIR/mimi_allocation.png)')
    parser.add_argument('--log-file', default='mimi_prune.jsonl',
                        help="the hook's log_file (default: %(default)s)")
    args = parser.parse_args()
    path = osp.join(args.work_dir, args.log_file)
    if not osp.isfile(path):
        raise SystemExit(f'{path} not found: was the run trained with '
                         'MiMiPruneHook (configs/mimi/*)?')
    out = args.out or osp.join(args.work_dir, 'mimi_allocation.png')
    plot(load_rounds(path), out)
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
