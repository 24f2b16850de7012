"""Training step of one Mona adapter: fused conv branch vs the literal one.

``Mona(fused=True)`` runs the multi-scale conv branch as one 7x7 depthwise
conv and one 1x1 whose kernels are built from the parameters at every call;
``Mona(fused=False)`` runs the official three depthwise convs, the mean, the
identity and the 1x1 projector literally. The two hold the same weights
(their largest output difference is printed too). Forward + backward (input
and every parameter) in training mode are timed round-robin, the order
alternating every round so that drift of a shared machine hits both alike, at
the stage-1 and stage-3 token maps of Swin-B at 1333x800 input, batch 2.
Prints a markdown table of median times and the ratio fused / unfused of the
same run.

    python tools/benchmarks/mona_fused.py                      # GPU if any
    python tools/benchmarks/mona_fused.py --device cpu --rounds 10
"""
import argparse
import statistics
import time

import torch

from mmpeft.adapters import Mona

# Swin-B at 1333x800: patch 4 gives 200x334 tokens (334 = ceil(1333 / 4)),
# each later stage halves it (rounding up).
SHAPES = (
    ('stage 1', 128, (200, 334)),
    ('stage 3', 512, (50, 84)),
)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=20,
                        help='timed steps per variant and shape')
    parser.add_argument('--warmup', type=int, default=2,
                        help='untimed rounds first')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch decides)')
    return parser.parse_args()


def build_pair(channels: int, device: str):
    """(fused, unfused) Mona adapters with the same random weights."""
    torch.manual_seed(0)
    unfused = Mona(channels, fused=False)
    for param in unfused.parameters():  # not the init: every path non-zero
        torch.nn.init.normal_(param, std=0.02)
    fused = Mona(channels, fused=True)
    fused.load_state_dict(unfused.state_dict())
    return fused.to(device).train(), unfused.to(device).train()


def sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize(device)


@torch.no_grad()
def max_relative_error(fused, unfused, tokens, hw_shape) -> float:
    """max |fused - unfused| / max |unfused| in eval mode (no dropout)."""
    ref = unfused.eval()(tokens, hw_shape)
    out = fused.eval()(tokens, hw_shape)
    for adapter in (fused, unfused):
        adapter.train()
    return ((out - ref).abs().max() / ref.abs().max()).item()


def training_step(adapter, tokens, hw_shape, grad_out) -> None:
    adapter.zero_grad(set_to_none=True)
    tokens.grad = None
    adapter(tokens, hw_shape).backward(grad_out)


def time_round_robin(adapters, tokens, hw_shape, rounds, warmup, device):
    """Per adapter, the list of timed forward + backward times in ms."""
    grad_out = torch.randn_like(tokens)
    times = [[] for _ in adapters]
    for r in range(warmup + rounds):
        for i in [(r + k) % len(adapters) for k in range(len(adapters))]:
            sync(device)
            start = time.perf_counter()
            training_step(adapters[i], tokens, hw_shape, grad_out)
            sync(device)
            if r >= warmup:
                times[i].append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'device {args.device} ({torch.get_num_threads()} CPU threads), '
          f'torch {torch.__version__}, fp32, Mona inner width 64, batch '
          f'{args.batch}, forward + backward in training mode, '
          f'{args.rounds} timed rounds after {args.warmup} warm-up rounds, '
          'round-robin\n')
    print('| Swin-B @1333x800 | C | H x W | unfused ms | fused ms | '
          'fused / unfused | max rel. diff |')
    print('|---|---|---|---|---|---|---|')
    for name, channels, (h, w) in SHAPES:
        fused, unfused = build_pair(channels, args.device)
        tokens = torch.randn(
            args.batch, h * w, channels, device=args.device,
            requires_grad=True)
        error = max_relative_error(fused, unfused, tokens, (h, w))
        fused_ms, unfused_ms = (
            statistics.median(t) for t in time_round_robin(
                (fused, unfused), tokens, (h, w), args.rounds, args.warmup,
                args.device))
        print(f'| {name} | {channels} | {h} x {w} | {unfused_ms:.1f} | '
              f'{fused_ms:.1f} | {fused_ms / unfused_ms:.3f} | {error:.1e} |')


if __name__ == '__main__':
    main()
