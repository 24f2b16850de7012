"""Registered backbones and necks (mmengine root registry: every scope sees them).

Modules that subclass a host package's class are listed in ``OPTIONAL`` with
the packages they import: each is imported only when those import, else its
names are registered as placeholders that raise the pip command
(:mod:`mmpeft.env`). A new module that needs mmdet / mmseg / mmrotate /
mmpretrain gets an entry there; one that needs only mmengine / torch is
imported directly.
"""
from ..env import OptionalModule, import_optional
from .necks import SimpleFeaturePyramid
from .peft_backbone import (PEFTBackboneMixin, PretrainedMismatchError,
                            merge_adapters)
from .placements import (SUBLAYERS, TOKEN_PLACEMENTS, WEIGHT_PLACEMENTS,
                         parse_adapters)

OPTIONAL = [
    OptionalModule('mmpeft.models.swin', ('mmdet', ), 'MODELS',
                   ('AdapterSwinTransformer', 'MonaSwinTransformer')),
    OptionalModule('mmpeft.models.mimi_swin', ('mmdet', ), 'MODELS',
                   ('MiMiSwin', )),
    OptionalModule('mmpeft.models.vit', ('mmseg', ), 'MODELS',
                   ('AdapterVisionTransformer', 'RepAdapterViT')),
    OptionalModule('mmpeft.models.e3va_swin', ('mmdet', ), 'MODELS',
                   ('E3VASwinTransformer', )),
    OptionalModule('mmpeft.models.e3va_vit', ('mmseg', ), 'MODELS',
                   ('E3VAViT', )),
    OptionalModule('mmpeft.models.pretrain_vit', ('mmpretrain', ), 'MODELS',
                   ('AdapterPretrainViT', 'AdapterViTEVA02', 'AdapterViTSAM')),
    OptionalModule('mmpeft.models.e3va_pretrain_vit', ('mmpretrain', ),
                   'MODELS', ('E3VAPretrainViT', )),
]
globals().update(import_optional(OPTIONAL))

__all__ = [
    'PEFTBackboneMixin', 'PretrainedMismatchError', 'merge_adapters',
    'SimpleFeaturePyramid', 'OPTIONAL', 'SUBLAYERS', 'TOKEN_PLACEMENTS',
    'WEIGHT_PLACEMENTS', 'parse_adapters',
    *[name for spec in OPTIONAL for name in spec.names if name in globals()]
]


def __getattr__(name):
    """``from mmpeft.models import MonaSwinTransformer`` without mmdet: the
    pip command instead of a bare ``cannot import name``."""
    from ..env import MissingHostError, missing_host
    message = missing_host('MODELS', name)
    if message is not None:
        raise MissingHostError(message)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
