"""Convert an official timm / DeiT ViT checkpoint to mmseg
``VisionTransformer`` keys, for configs that use the stock backbone (it has
no ``convert_weights``).

    python tools/convert_timm_vit.py \\
        checkpoints/jx_vit_base_p16_224-80ecf9dd.pth \\
        checkpoints/jx_vit_base_p16_224-80ecf9dd_mmseg.pth

mmpeft backbones read the original file directly with ``convert_weights=True``.
"""
import argparse
import os.path as osp

import torch
from mmengine.runner import CheckpointLoader
from mmengine.utils import mkdir_or_exist

from mmpeft.engine.checkpoint_io import (add_allow_nonfinite_argument,
                                         add_allow_pickle_argument)
from mmpeft.models.vit import convert_timm_vit, unwrap_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(
        description=' '.join(__doc__.split('\n\n')[0].split()))
    parser.add_argument('src', help='timm / DeiT checkpoint (path or URL)')
    parser.add_argument('dst', help='where to write the converted state dict')
    add_allow_pickle_argument(parser)
    add_allow_nonfinite_argument(parser)
    args = parser.parse_args()
    checkpoint = CheckpointLoader.load_checkpoint(args.src, map_location='cpu')
    converted = convert_timm_vit(unwrap_checkpoint(checkpoint))
    mkdir_or_exist(osp.dirname(osp.abspath(args.dst)))
    torch.save(converted, args.dst)
    print(f'{len(converted)} tensors in mmseg layout written to {args.dst}')


if __name__ == '__main__':
    main()
