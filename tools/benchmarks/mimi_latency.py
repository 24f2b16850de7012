"""Inference latency: stock Swin-B vs MiMiSwin masked (training form) vs shrunk.

Three Swin-B backbones with the settings of the detection configs
(configs/_base_/models/mask_rcnn_swin_fpn.py): mmdet's stock
``SwinTransformer``; ``MiMiSwin`` (``sigma0``) pruned to ``sigma_target`` by
the pruning hook's own plan and global selection, with masks (full-size
tensors, what training runs); and that model after ``merge_adapters()``
(adapters shrunk to their live neurons, what a deploy checkpoint holds; it is
checked to compute the same as the masked one). To get MiMi's uneven
allocation without training, each adapter's weights are scaled by a random
log-uniform factor before pruning. Forward passes are timed round-robin, the
order rotating every round; the script prints median latencies and their
ratios within the same run.

    python tools/benchmarks/mimi_latency.py --device cpu --img-size 224
"""
import argparse
import copy
import os.path as osp
import statistics
import time

import torch
from mmdet.models.backbones import SwinTransformer
from mmengine.config import Config

from mmpeft.engine import MiMiPruneHook
from mmpeft.engine.mimi_prune_hook import global_prune_masks
from mmpeft.models import MiMiSwin

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SWIN_B = osp.join(REPO_ROOT, 'configs/_base_/models/mask_rcnn_swin_fpn.py')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1])
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--sigma0', type=int, default=4)
    parser.add_argument('--sigma-target', type=float, default=32)
    parser.add_argument('--rho', type=float, default=0.5)
    parser.add_argument('--rounds', type=int, default=20,
                        help='timed forward passes per model and batch size')
    parser.add_argument('--warmup', type=int, default=3,
                        help='untimed rounds first')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch decides)')
    return parser.parse_args()


def prune(model: MiMiSwin, sigma_target: float, rho: float) -> None:
    """Run the hook's whole plan on ``model`` (no training in between)."""
    hook = MiMiPruneHook(sigma_target=sigma_target, rho=rho)
    adapters = [a for _, a in model.named_slots()]
    plan = hook.plan([a.in_dim for a in adapters],
                     [a.hidden_dim for a in adapters])
    for live_after in plan[1:]:
        masks = global_prune_masks(adapters, live_after)
        for adapter, mask in zip(
                adapters, masks.split([a.hidden_dim for a in adapters])):
            adapter.set_mask(mask)


def build_models(sigma0: int, sigma_target: float, rho: float, device: str):
    """(stock, masked, shrunk) Swin-B in eval mode, same frozen weights."""
    swin_b = dict(Config.fromfile(SWIN_B).model.backbone)
    for key in ('type', 'init_cfg', 'convert_weights'):
        swin_b.pop(key)
    torch.manual_seed(0)
    masked = MiMiSwin(sigma0=sigma0, **swin_b)
    masked.init_weights()
    with torch.no_grad():
        for _, adapter in masked.named_slots():
            scale = 10**torch.empty(()).uniform_(-0.5, 0.5)
            for param, _ in adapter.neuron_axes():
                param.mul_(scale)
    before = (masked.adapter_widths(), adapter_params(masked))
    prune(masked, sigma_target, rho)
    shrunk = copy.deepcopy(masked).merge_adapters()
    stock = SwinTransformer(**swin_b)
    stock.load_state_dict(masked.state_dict(), strict=False)
    models = (stock, masked, shrunk)
    for model in models:
        model.to(device)
        model.eval()  # mmdet's Swin.train() returns None: no chaining
    return before, models


def adapter_params(model: MiMiSwin) -> int:
    return sum(a.num_active_params() for _, a in model.named_slots())


def sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_round_robin(models, inputs, rounds, warmup, device):
    """Per model, the list of timed forward latencies in milliseconds."""
    times = [[] for _ in models]
    for r in range(warmup + rounds):
        for i in [(r + k) % len(models) for k in range(len(models))]:
            sync(device)
            start = time.perf_counter()
            models[i](inputs)
            sync(device)
            if r >= warmup:
                times[i].append((time.perf_counter() - start) * 1e3)
    return times


@torch.inference_mode()
def max_relative_error(reference, other, inputs) -> float:
    ref, out = reference(inputs)[-1], other(inputs)[-1]
    return ((out - ref).abs().max() / ref.abs().max()).item()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    (widths_before, params_before), (stock, masked, shrunk) = build_models(
        args.sigma0, args.sigma_target, args.rho, args.device)
    widths = shrunk.adapter_widths()
    in_dims = [a.in_dim for _, a in shrunk.named_slots()]
    probe = torch.randn(1, 3, args.img_size, args.img_size, device=args.device)
    print(f'device {args.device} ({torch.get_num_threads()} CPU threads), '
          f'torch {torch.__version__}, Swin-B at {args.img_size}x'
          f'{args.img_size}, fp32, {args.rounds} timed rounds after '
          f'{args.warmup} warm-up rounds, round-robin')
    print(f'MiMi sigma0={args.sigma0} -> sigma_target={args.sigma_target} '
          f'(rho={args.rho}): neurons {sum(widths_before)} -> {sum(widths)} '
          f'(compression {sum(in_dims) / sum(widths):.2f}), empty adapters '
          f'{widths.count(0)}/{len(widths)}, adapter params '
          f'{params_before:,} -> '
          f'{adapter_params(shrunk):,}')
    print('max |shrunk - masked| / max |masked|: '
          f'{max_relative_error(masked, shrunk, probe):.1e}')
    print(f'{"batch":>5} {"stock ms":>9} {"masked ms":>10} {"shrunk ms":>10} '
          f'{"masked/stock":>13} {"shrunk/stock":>13} '
          f'{"shrunk/masked":>14}')
    for batch in args.batch_sizes:
        inputs = torch.randn(
            batch, 3, args.img_size, args.img_size, device=args.device)
        medians = [
            statistics.median(t) for t in time_round_robin(
                (stock, masked, shrunk), inputs, args.rounds, args.warmup,
                args.device)
        ]
        print(f'{batch:>5} {medians[0]:>9.1f} {medians[1]:>10.1f} '
              f'{medians[2]:>10.1f} {medians[1] / medians[0]:>13.3f} '
              f'{medians[2] / medians[0]:>13.3f} '
              f'{medians[2] / medians[1]:>14.3f}')


if __name__ == '__main__':
    main()
