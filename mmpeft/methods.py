"""The method table: every PEFT method mmpeft ships, in one place.

Tests (forward / merge / freeze / checkpoint checks for every method), the
benchmark's variants and the docs read this table, so a new method is its
adapter module, one entry here and one method config base under
``configs/_base_/methods/``.
"""
from dataclasses import dataclass
from typing import Dict, Tuple


@dataclass(frozen=True)
class Method:
    """One PEFT method on one host.

    Args:
        name: short key (``mona``), used for variant and config names.
        host: ``'swin'`` (mmdet ``SwinTransformer``) or ``'vit'`` (mmseg
            ``VisionTransformer``).
        backbone: the backbone config that selects the method, merged over
            the stock backbone config (type and method arguments only).
        paper: where the method comes from.
        merges: ``merge_adapters`` removes every adapter (the deploy model is
            the stock backbone).
        config_base: the method config base that task configs inherit.
    """
    name: str
    host: str
    backbone: Dict
    paper: str
    merges: bool = False
    config_base: str = ''


METHODS: Dict[str, Method] = {
    m.name: m
    for m in (
        Method('mona', 'swin',
               dict(type='MonaSwinTransformer',
                    adapter_cfg=dict(type='Mona', inner_dim=64)),
               paper='Yin et al., CVPR 2025, arXiv 2408.08345',
               config_base='configs/_base_/methods/mona.py'),
        Method('repadapter', 'vit', dict(type='RepAdapterViT'),
               paper='Luo et al., arXiv 2302.08106', merges=True,
               config_base='configs/_base_/methods/repadapter.py'),
        Method('mimi', 'swin', dict(type='MiMiSwin', sigma0=4),
               paper='Marouf et al., WACV 2024, arXiv 2311.03873',
               config_base='configs/_base_/methods/mimi.py'),
    )
}


def methods_for(host: str) -> Tuple[Method, ...]:
    """The methods that run on ``host`` ('swin' or 'vit'), in table order."""
    return tuple(m for m in METHODS.values() if m.host == host)
