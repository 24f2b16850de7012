"""Built-in backbones of the backbone scope (``--preset``)."""
from dataclasses import dataclass
from typing import Dict, Tuple

from .families import FAMILIES


@dataclass(frozen=True)
class Preset:
    """A stock architecture of one family at its usual input size."""
    family: str
    backbone: dict
    img_size: Tuple[int, int]
    batch_size: int


PRESETS: Dict[str, Preset] = {
    'swin-t': Preset('swin', dict(embed_dims=96, depths=(2, 2, 6, 2),
                                  num_heads=(3, 6, 12, 24),
                                  drop_path_rate=0.2), (512, 512), 2),
    'swin-b': Preset('swin', dict(embed_dims=128, depths=(2, 2, 18, 2),
                                  num_heads=(4, 8, 16, 32),
                                  drop_path_rate=0.3), (512, 512), 2),
    'vit-s': Preset('vit', dict(embed_dims=384, num_layers=12, num_heads=6,
                                out_indices=(2, 5, 8, 11),
                                drop_path_rate=0.1), (512, 512), 2),
    'vit-b': Preset('vit', dict(embed_dims=768, num_layers=12, num_heads=12,
                                out_indices=(2, 5, 8, 11),
                                drop_path_rate=0.1), (512, 512), 2),
    # Seconds-long end-to-end runs (tests, smoke checks).
    'tiny-swin': Preset('swin', dict(embed_dims=32, depths=(1, 1, 1, 1),
                                     num_heads=(1, 2, 4, 8), window_size=4),
                        (64, 64), 1),
    'tiny-vit': Preset('vit', dict(embed_dims=32, num_layers=2, num_heads=2,
                                   patch_size=8, out_indices=(0, 1)),
                       (64, 64), 1),
}


def preset_backbone_cfg(preset: Preset, img_size: Tuple[int, int]) -> dict:
    """The stock backbone config of ``preset`` for ``img_size`` inputs."""
    family = FAMILIES[preset.family]
    cfg = dict(type=family.stock, **preset.backbone)
    if family.fixed_img_size:
        cfg['img_size'] = tuple(img_size)  # no position-embedding resize
    return cfg
