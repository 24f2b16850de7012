"""Convert an official DINOv2, EVA-02 or SAM release to mmpretrain backbone
keys, for configs that use the stock ``mmpretrain.VisionTransformer`` /
``ViTEVA02`` / ``ViTSAM`` (the mmpeft hosts read the original file with
``convert_weights=True``).

    python tools/convert_pretrain_vit.py dinov2 \\
        checkpoints/dinov2_vitb14_pretrain.pth \\
        checkpoints/dinov2_vitb14_pretrain_mmpretrain.pth

``--img-size H W`` (with ``--patch-size``) also resizes the position table
to that image's patch grid (the backbones resize it on load anyway; this
writes a file that needs no resizing). Where each release comes from:
``mmpeft/models/pretrain_convert.py``.
"""
import argparse
import os.path as osp

from mmengine.runner import CheckpointLoader

from mmpeft.engine.checkpoint_io import add_allow_pickle_argument
from mmpeft.engine.export import save_atomic
from mmpeft.models.pretrain_convert import (CONVERTERS, ConversionError,
                                            patch_grid, resize_pos_embed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=' '.join(__doc__.split('\n\n')[0].split()))
    parser.add_argument('source', choices=sorted(CONVERTERS),
                        help='which release the file is')
    parser.add_argument('src', help='the official checkpoint (path or URL)')
    parser.add_argument('dst', help='where to write the converted state dict')
    parser.add_argument('--img-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='resize the position table to this image size')
    parser.add_argument('--patch-size', type=int, default=None,
                        help='patch size for --img-size (default: from the '
                        'patch embedding, 14 for DINOv2 / EVA-02)')
    add_allow_pickle_argument(parser)
    args = parser.parse_args(argv)
    if osp.abspath(args.src) == osp.abspath(args.dst):
        parser.error(f'dst {args.dst} is the input file; write the converted '
                     'weights to another path.')
    checkpoint = CheckpointLoader.load_checkpoint(args.src, map_location='cpu')
    try:
        converted = CONVERTERS[args.source](checkpoint)
    except ConversionError as err:
        parser.exit(1, f'{args.src}: {err}\n')
    if args.img_size:
        patch = args.patch_size or converted[
            'patch_embed.projection.weight'].shape[-1]
        extra = 0 if args.source == 'sam' else 1
        converted['pos_embed'] = resize_pos_embed(
            converted['pos_embed'], patch_grid(args.img_size, patch), extra)
    save_atomic(dict(converted), args.dst)
    print(f'{len(converted)} tensors of {args.source} in mmpretrain layout '
          f'written to {args.dst}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
