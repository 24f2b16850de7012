"""mmpeft: parameter-efficient fine-tuning of vision backbones for OpenMMLab.

Importing it applies the upstream workarounds in :mod:`mmpeft.compat` and
registers the backbones, necks and hooks in mmengine's root registries, where
the mmdet, mmseg and mmrotate registries find them. Use it from any mm config
with ``custom_imports = dict(imports=['mmpeft'])``.
"""
from . import compat

compat.apply()

from . import adapters, engine, models  # noqa: E402,F401
from .models import merge_adapters  # noqa: E402,F401

__version__ = '0.1.0'
