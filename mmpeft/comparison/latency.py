"""Median ``test_step`` latency of models timed in turns, one process:
``python -m mmpeft.comparison.latency CONFIG CHECKPOINT [...] --json OUT``
(what tools/compare.py runs after every training)."""
import json
import statistics
import sys
from typing import List, Sequence, Tuple


def measure_latency(pairs: Sequence[Tuple[str, str]], iters: int = 20,
                    warmup: int = 3) -> List[dict]:
    """Median milliseconds of ``model.test_step`` on the first test batch
    (data loading excluded) of each (config, checkpoint), on the GPU if
    there is one; the models take turns, one step each per round."""
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    from ..benchmark.timing import timed
    from ..engine.checkpoint_io import load_file
    from ..engine.export import build_from_config
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


def main(argv: Sequence[str]) -> None:
    import argparse
    parser = argparse.ArgumentParser(
        prog='python -m mmpeft.comparison.latency',
        description='Median test_step latency of models timed in turns '
        '(tools/compare.py runs this after every training).')
    parser.add_argument('pairs', nargs='+', metavar='CONFIG CHECKPOINT')
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--json', required=True, help='where to write it')
    args = parser.parse_args(argv)
    if len(args.pairs) % 2:
        parser.error('give a CHECKPOINT after every CONFIG')
    result = measure_latency(list(zip(args.pairs[::2], args.pairs[1::2])),
                             args.iters)
    with open(args.json, 'w') as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == '__main__':
    main(sys.argv[1:])
