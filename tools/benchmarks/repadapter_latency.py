"""Inference latency: plain ViT-B vs RepAdapterViT unmerged vs merged.

Three ViT-B/16 backbones with the settings of the ViT configs
(configs/_base_/models/vit_b16_simple_fpn.py): mmseg's stock
``VisionTransformer``, ``RepAdapterViT`` with random non-zero adapters, and
that model after ``merge_adapters()`` (the stock ViT holds the merged
weights, so all three compute the same function, checked before timing).
Forward passes are timed round-robin, the order rotating every round, so that
drift of the machine hits the three alike. The script prints each model's
median latency and its ratio to the plain ViT: the median over rounds of
t_model / t_plain within the round.

    python tools/benchmarks/repadapter_latency.py                  # GPU, 512
    python tools/benchmarks/repadapter_latency.py --device cpu \\
        --img-size 224 --rounds 20 --threads 1 --clock cpu

On a CPU shared with other jobs, ``--threads 1 --clock cpu`` (the process's
CPU time instead of wall time) leaves out the time spent waiting for a core.
"""
import argparse
import copy
import os.path as osp
import statistics
import time

import torch
from mmengine.config import Config
from mmseg.models.backbones import VisionTransformer

from mmpeft.models import RepAdapterViT

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
VIT_B16 = osp.join(REPO_ROOT, 'configs/_base_/models/vit_b16_simple_fpn.py')


def parse_args():
    parser = argparse.ArgumentParser(
        description=' '.join(__doc__.split('\n\n')[0].split()))
    parser.add_argument('--img-size', type=int, default=512)
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--device',
                        default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--rounds',
                        type=int,
                        default=30,
                        help='timed forward passes per model and batch size')
    parser.add_argument('--warmup',
                        type=int,
                        default=3,
                        help='untimed rounds first')
    parser.add_argument('--threads',
                        type=int,
                        default=None,
                        help='torch CPU threads (default: torch decides)')
    parser.add_argument('--clock',
                        choices=['wall', 'cpu'],
                        default='wall',
                        help='wall time, or this process\'s CPU time '
                        '(CPU device only)')
    args = parser.parse_args()
    if args.clock == 'cpu' and args.device != 'cpu':
        parser.error('--clock cpu measures CPU time; use it with --device cpu')
    return args


def build_models(img_size: int, device: str):
    """(plain, unmerged, merged) ViT-B/16 in eval mode, same function."""
    vit_b16 = dict(Config.fromfile(VIT_B16).vit_b16)
    vit_b16.update(img_size=img_size, out_indices=-1)
    torch.manual_seed(0)
    unmerged = RepAdapterViT(**vit_b16)
    unmerged.init_weights()  # stock ViT init, official adapter init
    for _, adapter in unmerged.named_adapters():  # B starts at 0: make it not
        torch.nn.init.normal_(adapter.conv_B.weight, std=0.02)
        torch.nn.init.normal_(adapter.conv_B.bias, std=0.02)
    merged = copy.deepcopy(unmerged).merge_adapters()
    plain = VisionTransformer(**vit_b16)
    plain.load_state_dict(merged.state_dict(), strict=True)
    models = (plain, unmerged, merged)
    for model in models:
        model.to(device)
        model.eval()  # mmseg's VisionTransformer.train() returns None
        # The same flags everywhere: on CPU, torch runs the attention
        # projections as bmm instead of one mm when the weight does not
        # require grad, which alone moves latency by 10-30 %.
        model.requires_grad_(False)
    return models


def sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_round_robin(models, inputs, rounds, warmup, device, clock):
    """times[r][i]: milliseconds of model i's forward in timed round r."""
    times = []
    for r in range(warmup + rounds):
        round_times = [0.0] * len(models)
        for i in [(r + k) % len(models) for k in range(len(models))]:
            sync(device)
            start = clock()
            models[i](inputs)
            sync(device)
            round_times[i] = (clock() - start) * 1e3
        if r >= warmup:
            times.append(round_times)
    return times


@torch.inference_mode()
def max_relative_error(reference, other, inputs) -> float:
    ref, out = reference(inputs)[-1], other(inputs)[-1]
    return ((out - ref).abs().max() / ref.abs().max()).item()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    plain, unmerged, merged = build_models(args.img_size, args.device)
    probe = torch.randn(1, 3, args.img_size, args.img_size, device=args.device)
    print(f'device {args.device} ({torch.get_num_threads()} CPU threads), '
          f'torch {torch.__version__}, ViT-B/16 at {args.img_size}x'
          f'{args.img_size}, fp32, {args.rounds} timed rounds after '
          f'{args.warmup} warm-up rounds, round-robin, {args.clock} clock')
    print('max |out - plain| / max |plain|: unmerged '
          f'{max_relative_error(plain, unmerged, probe):.1e}, merged '
          f'{max_relative_error(plain, merged, probe):.1e}')
    print(f'{"batch":>5} {"plain ms":>10} {"unmerged ms":>12} '
          f'{"unmerged/plain":>15} {"merged ms":>10} {"merged/plain":>13}')
    clock = time.process_time if args.clock == 'cpu' else time.perf_counter
    for batch in args.batch_sizes:
        inputs = torch.randn(batch,
                             3,
                             args.img_size,
                             args.img_size,
                             device=args.device)
        times = time_round_robin((plain, unmerged, merged), inputs,
                                 args.rounds, args.warmup, args.device, clock)
        plain_ms, unmerged_ms, merged_ms = (statistics.median(t)
                                            for t in zip(*times))
        unmerged_ratio, merged_ratio = (statistics.median(t[i] / t[0]
                                                          for t in times)
                                        for i in (1, 2))
        print(f'{batch:>5} {plain_ms:>10.1f} {unmerged_ms:>12.1f} '
              f'{unmerged_ratio:>15.3f} {merged_ms:>10.1f} '
              f'{merged_ratio:>13.3f}')


if __name__ == '__main__':
    main()
