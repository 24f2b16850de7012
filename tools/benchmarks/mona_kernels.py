"""The kernels that make a Mona training step expensive on CPU.

Times, for the tensor of one stage-1 Mona adapter of Swin-T at 512x512
(batch 2, 128x128 tokens, 64 channels, channels-last like the fused path):
the 7x7 depthwise conv forward, its backward to the input only, its backward
with the weight gradient, dropout (p=0.1, training) and GELU, each as the
median of ``--rounds`` single-threaded runs, with ratios to the conv forward.

    python tools/benchmarks/mona_kernels.py
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def median_ms(fn, rounds):
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        start = time.process_time()
        fn()
        times.append((time.process_time() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--size', type=int, default=128, help='H = W tokens')
    parser.add_argument('--channels', type=int, default=64)
    parser.add_argument('--rounds', type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    b, s, c = args.batch_size, args.size, args.channels
    tokens = torch.randn(b, s, s, c)
    fmap = tokens.permute(0, 3, 1, 2).requires_grad_(True)  # NHWC view
    weight = torch.randn(c, 1, 7, 7, requires_grad=True)
    bias = torch.randn(c, requires_grad=True)
    grad = torch.randn(b, c, s, s).contiguous(
        memory_format=torch.channels_last)

    def conv(w, bb):
        return F.conv2d(fmap, w, bb, padding=3, groups=c)

    def forward():
        with torch.no_grad():
            conv(weight, bias)

    kernels = {
        'depthwise 7x7 forward': forward,
        'depthwise 7x7 forward + backward to input':
            lambda: conv(weight.detach(), bias.detach()).backward(grad),
        'depthwise 7x7 forward + backward with weight gradient':
            lambda: conv(weight, bias).backward(grad),
        'dropout p=0.1 (training)': lambda: F.dropout(tokens, 0.1, True),
        'GELU': lambda: F.gelu(tokens),
    }
    times = {name: median_ms(fn, args.rounds) for name, fn in kernels.items()}
    reference = times['depthwise 7x7 forward']
    print(f'CPU, 1 thread, CPU time, tensor {b}x{c}x{s}x{s} channels-last, '
          f'median of {args.rounds}')
    print('| kernel | ms | / conv forward |')
    print('|---|---:|---:|')
    for name, ms in times.items():
        print(f'| {name} | {ms:.1f} | {ms / reference:.1f} |')


if __name__ == '__main__':
    main()
