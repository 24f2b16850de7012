"""Registered backbones and necks (mmengine root registry: every scope sees them)."""
from .necks import SimpleFeaturePyramid
from .peft_backbone import (PEFTBackboneMixin, PretrainedMismatchError,
                            merge_adapters)
from .placements import (SUBLAYERS, TOKEN_PLACEMENTS, WEIGHT_PLACEMENTS,
                         parse_adapters)
from .mimi_swin import MiMiSwin
from .swin import AdapterSwinTransformer, MonaSwinTransformer
from .vit import AdapterVisionTransformer, RepAdapterViT

__all__ = [
    'PEFTBackboneMixin', 'PretrainedMismatchError', 'merge_adapters', 'AdapterSwinTransformer',
    'MonaSwinTransformer', 'AdapterVisionTransformer', 'RepAdapterViT', 'SimpleFeaturePyramid',
    'MiMiSwin', 'SUBLAYERS', 'TOKEN_PLACEMENTS', 'WEIGHT_PLACEMENTS',
    'parse_adapters'
]
