"""Backbone families: a stock backbone, its variants and the targets.

A family is a host of the method table (``'swin'``, ``'vit'``). The stock
classes are imported when first used, so the Swin family works in an
environment without mmseg.
"""
import importlib
from dataclasses import dataclass
from typing import Tuple

from .variants import Variant, host_variants, resolve_type


@dataclass(frozen=True)
class Target:
    """A ratio to the reference variant that we aim to stay under."""
    name: str
    variant: str
    metric: str
    limit: float


def import_class(path: str, needed_for: str) -> type:
    """The class at ``'package.module:Class'``, or an error naming the fix."""
    module, name = path.split(':')
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        package = module.split('.')[0]
        raise ImportError(
            f'{needed_for} needs {path} but {package} is not importable '
            f'({exc}); install the pinned {package} (README, "Install") or '
            'benchmark another family.') from exc


@dataclass(frozen=True)
class Family:
    """A stock backbone and the ways of fine-tuning it that we compare.

    Args:
        name: the host name in the method table.
        stock_path: ``'module:Class'`` of the stock backbone (full, frozen).
        kin_paths: other stock classes of the same architecture, whose
            configs benchmark as this family (optional packages).
        fixed_img_size: the backbone takes ``img_size`` (ViT: position
            embeddings are not resized).
        targets: ratios to ``full`` we aim to stay under.
    """
    name: str
    stock_path: str
    kin_paths: Tuple[str, ...] = ()
    fixed_img_size: bool = False
    targets: Tuple[Target, ...] = ()

    @property
    def stock(self) -> type:
        return import_class(self.stock_path, f'The {self.name} family')

    @property
    def variants(self) -> Tuple[Variant, ...]:
        return host_variants(self.name)

    def includes(self, cls: type) -> bool:
        """Whether ``cls`` is (derived from) a stock class of this family
        whose package is importable."""
        for path in (self.stock_path, ) + self.kin_paths:
            try:
                stock = import_class(path, f'The {self.name} family')
            except ImportError:
                continue
            if issubclass(cls, stock):
                return True
        return False


SWIN = Family(
    name='swin',
    stock_path='mmdet.models.backbones:SwinTransformer',
    kin_paths=('mmseg.models.backbones:SwinTransformer', ),
    targets=(
        Target('E3VA training step time', 'e3va_swin', 'train_ms', 0.50),
        Target('E3VA training peak memory', 'e3va_swin', 'train_peak_mib',
               0.35),
        Target('Mona training peak memory, checkpointed', 'mona_cp',
               'train_peak_mib', 0.60),
        Target('Mona training peak memory, adapters recomputed',
               'mona_adapter_cp', 'train_peak_mib', 0.80),
        Target('Mona training peak memory, nothing recomputed', 'mona',
               'train_peak_mib', 0.80),
        Target('Mona training step time', 'mona', 'train_ms', 0.85),
        Target('Mona deploy latency / stock', 'mona_deploy', 'infer_ms',
               1.10),
        Target('MiMi shrunk latency / stock', 'mimi_deploy', 'infer_ms',
               1.05),
        Target('Mona in the last two stages, training step time',
               'mona_last2', 'train_ms', 0.60),
        Target('Mona in the last two stages, training peak memory',
               'mona_last2', 'train_peak_mib', 0.45),
        Target('LoRA in the last two stages, training step time',
               'lora_swin_last2', 'train_ms', 0.60),
        Target('LoRA in the last two stages, training peak memory',
               'lora_swin_last2', 'train_peak_mib', 0.45),
    ))

VIT = Family(
    name='vit',
    stock_path='mmseg.models.backbones:VisionTransformer',
    fixed_img_size=True,
    targets=(
        Target('E3VA training step time', 'e3va_vit', 'train_ms', 0.50),
        Target('E3VA training peak memory', 'e3va_vit', 'train_peak_mib',
               0.35),
        Target('RepAdapter merged latency / stock', 'repadapter_deploy',
               'infer_ms', 1.02),
    ))

FAMILIES = {family.name: family for family in (SWIN, VIT)}


def family_of(backbone_type) -> Family:
    """The family whose stock backbone ``backbone_type`` is or derives from."""
    cls = resolve_type(backbone_type)
    for family in FAMILIES.values():
        if cls is not None and family.includes(cls):
            return family
    raise ValueError(
        f'No benchmark family for backbone type {backbone_type!r}: the '
        'benchmark knows Swin (mmdet / mmseg SwinTransformer and mmpeft Swin '
        'backbones) and ViT (mmseg VisionTransformer and mmpeft ViT '
        'backbones). Use a config with one of those backbones.')
