"""Convert a checkpoint trained with the official Mona code to mmpeft's layout.

The official code (github.com/Leiyi-Hu/mona) trains Microsoft's Swin copied
into mmdet 2.x / mmseg 0.x (``SwinTransformer_mona``): backbone keys such as
``backbone.layers.{i}.blocks.{j}.attn.qkv``, ``mlp.fc1``,
``downsample.reduction``, ``patch_embed.proj`` and the adapters
``my_module_1`` (after attention) / ``my_module_2`` (after the FFN). This tool
writes the same weights for :class:`mmpeft.models.MonaSwinTransformer`: the
Swin part through mmdet's own ``swin_converter`` (key names, and the
PatchMerging channel order that mmdet 3's unfold-based merging expects), the
adapters renamed to ``attn_adapter`` / ``ffn_adapter`` (their inner names
are the official ones). Neck and head keys are copied unchanged: mmdet 2.x and
3.x, mmseg 0.x and 1.x name them alike.

    python tools/convert_mona_official.py mona_cascade_swinb_coco.pth \\
        checkpoints/mona_cascade_swinb_coco_mmpeft.pth

A whole-model checkpoint (``backbone.*`` keys) converts to a whole-model one,
for ``load_from`` or ``tools/test.py``; a bare backbone state dict converts to
a bare one, for ``MonaSwinTransformer.load_state_dict``. The source is read
with ``weights_only=True``; an mmcv 1.x file that holds pickled objects needs
``--allow-pickle`` (only for a file you trust). The output holds tensors and
plain metadata only, so it loads without the opt-in.
"""
import argparse
from collections import OrderedDict
from typing import Dict

import torch
from mmdet.models.backbones.swin import swin_converter
from mmengine.runner import CheckpointLoader

from mmpeft.engine.checkpoint_io import (add_allow_nonfinite_argument,
                                         add_allow_pickle_argument)

PREFIX = 'backbone.'
ADAPTER_NAMES = (('.my_module_1.', '.attn_adapter.'),
                 ('.my_module_2.', '.ffn_adapter.'))


def convert_mona_official(
        state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official Mona state dict (whole model or bare backbone) -> mmpeft's."""
    whole_model = any(key.startswith(PREFIX) for key in state_dict)
    backbone = OrderedDict(
        (key[len(PREFIX):] if whole_model else key, value)
        for key, value in state_dict.items()
        if not whole_model or key.startswith(PREFIX))
    if not any('.my_module_' in key for key in backbone):
        raise ValueError(
            'No official Mona adapter keys (layers.*.blocks.*.my_module_1 / '
            'my_module_2) in this checkpoint, so it was not trained with the '
            'official Mona code. For a plain Microsoft Swin checkpoint set '
            'convert_weights=True in the backbone config instead.')
    converted = OrderedDict()
    for key, value in swin_converter(backbone).items():  # adds 'backbone.'
        for official, ours in ADAPTER_NAMES:
            key = key.replace(official, ours)
        converted[key if whole_model else key[len(PREFIX):]] = value
    if whole_model:
        converted.update((key, value) for key, value in state_dict.items()
                         if not key.startswith(PREFIX))
    return converted


def convert_file(src: str, dst: str) -> None:
    checkpoint = CheckpointLoader.load_checkpoint(src, map_location='cpu')
    state_dict = checkpoint.get('state_dict', checkpoint.get('model',
                                                             checkpoint))
    meta = dict(converted_from=src, converter='tools/convert_mona_official.py')
    classes = (checkpoint.get('meta') or {}).get('CLASSES')  # mmdet 2.x meta
    if classes is not None:
        meta['dataset_meta'] = dict(classes=tuple(classes))
    torch.save(
        dict(state_dict=convert_mona_official(state_dict), meta=meta), dst)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='official Mona checkpoint (path or URL)')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    add_allow_pickle_argument(parser)
    add_allow_nonfinite_argument(parser)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    convert_file(args.src, args.dst)
    print(f'wrote {args.dst}')


if __name__ == '__main__':
    main()
