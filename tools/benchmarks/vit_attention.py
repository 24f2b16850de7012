"""One ViT attention layer: stock mmcv call vs ``packed_self_attention``,
with trainable and with frozen weights.

mmcv's ``MultiheadAttention`` hands ``nn.MultiheadAttention`` three
separately transposed views of the tokens; with frozen weights ATen then runs
the in-projections as slower batched GEMMs. ``mmpeft.compat.
packed_self_attention`` passes one contiguous tensor instead (what the
mmpeft ViT layers do). The script times training (forward + backward to the
input) and inference of the four combinations round-robin and prints median
CPU or CUDA times with ratios to the stock call with trainable weights.

    python tools/benchmarks/vit_attention.py --threads 1
"""
import argparse
import statistics
import time

import torch
from mmcv.cnn.bricks.transformer import MultiheadAttention

from mmpeft.compat import packed_self_attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--embed-dims', type=int, default=384)  # ViT-S
    parser.add_argument('--num-heads', type=int, default=6)
    parser.add_argument('--tokens', type=int, default=1025)  # 512/16 + cls
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=9)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith('cuda')
    clock = time.perf_counter if cuda else time.process_time

    torch.manual_seed(0)
    attn = MultiheadAttention(args.embed_dims, args.num_heads,
                              batch_first=True).to(args.device)
    x = torch.randn(args.batch_size, args.tokens, args.embed_dims,
                    device=args.device, requires_grad=True)
    calls = {'stock': lambda: attn(x, identity=x),
             'packed': lambda: x + attn.dropout_layer(attn.proj_drop(
                 packed_self_attention(attn, x)))}
    cases = [(weights, call, mode) for weights in ('trainable', 'frozen')
             for call in calls for mode in ('train', 'infer')]

    def run(weights, call, mode):
        attn.requires_grad_(weights == 'trainable')
        if mode == 'train':
            calls[call]().sum().backward()
            x.grad = None
            attn.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                calls[call]()
        if cuda:
            torch.cuda.synchronize()

    times = {case: [] for case in cases}
    for r in range(args.rounds + 1):  # round 0 warms up
        for case in cases[r % len(cases):] + cases[:r % len(cases)]:
            start = clock()
            run(*case)
            if r:
                times[case].append((clock() - start) * 1e3)
    median = {case: statistics.median(t) for case, t in times.items()}
    print(f'{args.device}, {torch.get_num_threads()} threads, '
          f'{"wall" if cuda else "CPU"} time, batch {args.batch_size} x '
          f'{args.tokens} tokens x {args.embed_dims}, median of '
          f'{args.rounds}')
    print('| weights | call | train ms | train / stock trainable | '
          'infer ms | infer / stock trainable |')
    print('|---|---|---:|---:|---:|---:|')
    for weights in ('trainable', 'frozen'):
        for call in calls:
            row = [f'| {weights} | {call} ']
            for mode in ('train', 'infer'):
                ms = median[(weights, call, mode)]
                row.append(f'| {ms:.0f} | '
                           f'{ms / median[("trainable", "stock", mode)]:.2f} ')
            print(''.join(row) + '|')


if __name__ == '__main__':
    main()
