"""mmpeft: parameter-efficient fine-tuning of vision backbones for OpenMMLab.

Importing it applies the upstream workarounds in :mod:`mmpeft.compat` and
registers the backbones, necks and hooks in mmengine's root registries, where
the mmdet, mmseg and mmrotate registries find them. Use it from any mm config
with ``custom_imports = dict(imports=['mmpeft'])``.

Only mmengine (with torch and mmcv) is required: the Swin backbones register
when mmdet imports, the ViT backbones when mmseg does, the DINOv2 / EVA-02 /
SAM backbones when mmpretrain does; otherwise their names
are placeholders that raise the pip command (:mod:`mmpeft.env`;
``python -m mmpeft.env`` prints what is available). ``mmpeft.benchmark`` is
imported by ``tools/benchmark.py`` only.
"""
__version__ = '0.1.0'

from . import compat  # noqa: E402

compat.apply()

from . import adapters, engine, models  # noqa: E402,F401
from .models import merge_adapters  # noqa: E402,F401
