"""The method table: every PEFT method mmpeft ships, in one place.

Tests (forward / merge / freeze / checkpoint checks for every method), the
benchmark's variants and the docs read this table, so a new method is its
adapter module, one entry here and one method config base under
``configs/_base_/methods/``.
"""
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple


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
        deploy: turns a freshly built backbone of this method into the
            deploy form a finished training run ends in, in place (the
            benchmark's ``<name>_deploy`` variant). None: ``merge_adapters``
            alone, right wherever training leaves no state that a fresh
            model lacks. MiMi sets it: training ends pruned.
    """
    name: str
    host: str
    backbone: Dict
    paper: str
    merges: bool = False
    config_base: str = ''
    deploy: Optional[Callable] = None


def prune_and_shrink_mimi(backbone, sigma_target: int = 32) -> None:
    """MiMi pruned globally to sigma_target=32 (as configs/mimi ends) and
    shrunk.

    One global prune round from the current weights stands in for the
    training-time rounds of ``MiMiPruneHook``; ``merge_adapters`` then
    shrinks every adapter to its live neurons.
    """
    from mmpeft.engine.mimi_prune_hook import global_prune_masks
    adapters = [adapter for _, adapter in backbone.named_slots()]
    live_after = sum(a.in_dim for a in adapters) // sigma_target
    masks = global_prune_masks(adapters, live_after)
    for adapter, mask in zip(adapters,
                             masks.split([a.hidden_dim for a in adapters])):
        adapter.set_mask(mask)
    backbone.merge_adapters()


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
               config_base='configs/_base_/methods/mimi.py',
               deploy=prune_and_shrink_mimi),
    )
}


def methods_for(host: str) -> Tuple[Method, ...]:
    """The methods that run on ``host`` ('swin' or 'vit'), in table order."""
    return tuple(m for m in METHODS.values() if m.host == host)
