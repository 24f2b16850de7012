"""What a training forward keeps for backward, by where it is kept.

Full fine-tuning vs the PEFT Swins: one training forward of each backbone
(Swin-T by default, 512x512, batch 2) under a ``saved_tensors_hooks`` that
records every tensor autograd saves, attributed to the innermost adapter,
else block, else the rest of the backbone, each storage counted once. This
explains the peak-memory ratios of ``tools/benchmark.py``: frozen weights
save less in the blocks, Mona's own adapters save about as much again, and
``adapter_cp`` (adapters recomputed in backward) removes that.

    python tools/benchmarks/saved_activations.py
"""
import argparse
from contextlib import contextmanager

import torch
from mmdet.models.backbones import SwinTransformer
from mmdet.models.backbones.swin import SwinBlock
from torch.autograd.graph import saved_tensors_hooks

from mmpeft.models import MiMiSwin, MonaSwinTransformer

MiB = 1 << 20
SWIN_T = dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
              drop_path_rate=0.2)
VARIANTS = {
    'full': lambda: SwinTransformer(**SWIN_T),
    'mona': lambda: MonaSwinTransformer(**SWIN_T),
    'mona_adapter_cp': lambda: MonaSwinTransformer(**SWIN_T, adapter_cp=True),
    'mimi': lambda: MiMiSwin(**SWIN_T),
}
PLACES = ('block', 'adapter', 'other')


@contextmanager
def record_saved(model):
    """Yield {place: bytes} filled while the block is active."""
    adapters = {id(a) for _, a in getattr(model, 'named_adapters',
                                          lambda: [])()}
    stack, seen = ['other'], set()
    saved = dict.fromkeys(PLACES, 0)

    def leave(*args):
        stack.pop()

    handles = []
    for module in model.modules():
        place = ('adapter' if id(module) in adapters else
                 'block' if isinstance(module, SwinBlock) else None)
        if place is not None:
            handles.append(module.register_forward_pre_hook(
                lambda *args, place=place: stack.append(place)))
            handles.append(module.register_forward_hook(leave))

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            saved[stack[-1]] += storage.nbytes()
        return tensor

    try:
        with saved_tensors_hooks(pack, lambda tensor: tensor):
            yield saved
    finally:
        for handle in handles:
            handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--img-size', type=int, default=512)
    parser.add_argument('--batch-size', type=int, default=2)
    args = parser.parse_args()
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    print(f'Swin-T, {args.img_size}x{args.img_size}, batch '
          f'{args.batch_size}, fp32: MiB saved for backward in one training '
          'forward')
    print(f'| variant | {" | ".join(PLACES)} | total | total / full |')
    print('|---|' + '---:|' * (len(PLACES) + 2))
    reference = None
    for name, build in VARIANTS.items():
        torch.manual_seed(0)
        model = build()
        model.train()
        with record_saved(model) as saved:
            outs = model(x)
        total = sum(saved.values())
        reference = reference or total
        print(f'| {name} | ' +
              ' | '.join(f'{saved[p] / MiB:.0f}' for p in PLACES) +
              f' | {total / MiB:.0f} | {total / reference:.2f} |')
        del outs


if __name__ == '__main__':
    main()
