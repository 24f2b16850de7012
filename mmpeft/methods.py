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
        host: ``'swin'`` (mmdet ``SwinTransformer``), ``'vit'`` (mmseg
            ``VisionTransformer``) or ``'dinov2'`` (mmpretrain
            ``VisionTransformer``: DINOv2, DeiT, EVA archs).
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


# The adapter-based methods the Mona paper compares against (arXiv
# 2408.08345, Table 1 and its baseline paragraph), each on both generic hosts
# at the place its own paper puts it. Width 64 everywhere: the official
# default of the Houlsby adapter (adapter-bert `hidden_size=64`) and of
# AdaptFormer (`ffn_num=64`), and with it tools/count_params.py gives the
# Mona paper's "% of backbone" for Swin-B exactly (3.58%, 1.79%); LoRA's rank
# 64 and LoRand's bottleneck 64 are our choice, the paper states neither
# (README "Comparison methods": our counts next to the paper's).
HOST_TYPES = {'swin': 'AdapterSwinTransformer',
              'vit': 'AdapterVisionTransformer',
              'dinov2': 'AdapterPretrainViT'}
COMPARISON = {
    # Houlsby bottleneck on each sublayer output, before the residual add
    # (Houlsby et al. 2019, Fig. 2; as MiMi). adapter-bert defaults: m = 64,
    # init_scale 1e-3.
    'adapter': (dict(attn=dict(series=dict(type='HoulsbyAdapter',
                                           hidden_dim=64)),
                     ffn=dict(series=dict(type='HoulsbyAdapter',
                                          hidden_dim=64))),
                'Houlsby et al., ICML 2019, arXiv 1902.00751', False),
    # Parallel to the FFN only; the official image-run defaults (AdaptFormer
    # main_image.py tuning_config): ffn_num 64, scalar 0.1, no layernorm,
    # 'lora' init, dropout 0.1.
    'adaptformer': (dict(ffn=dict(parallel=dict(
        type='AdaptFormer', hidden_dim=64, scale=0.1, layernorm='none',
        dropout=0.1))),
                    'Chen et al., NeurIPS 2022, arXiv 2205.13535', False),
    # On the attention's fused qkv weight (the Mona paper: "parallel
    # learnable matrices to the multi-head attention weights"); r = 64 (see
    # above), alpha = r (scale 1: the paper gives none), no dropout.
    'lora': (dict(attn=dict(qkv=dict(type='LoRA', r=64, alpha=64,
                                     dropout=0.0))),
             'Hu et al., ICLR 2022, arXiv 2106.09685', True),
    # After the attention and after the FFN of every block, before the
    # residual add, as the LoRand paper's figure places it. alpha = 2
    # branches (the public port's default), kernel beta = 8, m = 64: our
    # choice, the paper's values were not found (mmpeft/adapters/lorand.py).
    'lorand': (dict(attn=dict(series=dict(type='LoRand', hidden_dim=64,
                                          num_branch=2, kernel_dim=8)),
                    ffn=dict(series=dict(type='LoRand', hidden_dim=64,
                                         num_branch=2, kernel_dim=8))),
               'Yin et al., CVPR 2023 ("1% VS 100%")', False),
}

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
        # The presets' adapters at the same places of mmpretrain's ViT
        # layers (DINOv2): Mona after each residual add (the class token
        # passes its convs), RepAdapter before qkv / the first FFN linear.
        Method('mona_dinov2', 'dinov2',
               dict(type='AdapterPretrainViT',
                    adapters={s: dict(post=dict(type='Mona', inner_dim=64))
                              for s in ('attn', 'ffn')}),
               paper='Yin et al., CVPR 2025, arXiv 2408.08345',
               config_base='configs/_base_/methods/mona_dinov2.py'),
        Method('repadapter_dinov2', 'dinov2',
               dict(type='AdapterPretrainViT',
                    adapters={s: dict(pre=dict(type='RepAdapter',
                                               hidden_dim=8, groups=2,
                                               scale=1.0))
                              for s in ('attn', 'ffn')}),
               paper='Luo et al., arXiv 2302.08106', merges=True,
               config_base='configs/_base_/methods/repadapter_dinov2.py'),
        *(Method(f'{name}_{host}', host,
                 dict(type=HOST_TYPES[host], adapters=adapters),
                 paper=paper, merges=merges,
                 config_base=f'configs/_base_/methods/{name}_{host}.py')
          for name, (adapters, paper, merges) in COMPARISON.items()
          for host in HOST_TYPES),
    )
}


def methods_for(host: str) -> Tuple[Method, ...]:
    """The methods that run on ``host`` (a key of :data:`HOST_TYPES`), in
    table order."""
    return tuple(m for m in METHODS.values() if m.host == host)


@dataclass(frozen=True)
class PolicyMethod:
    """A method that adds no module and trains a part of the backbone
    itself, chosen by a ``PEFTFreezeHook`` policy (the Mona paper's
    baselines besides the adapters).

    Args:
        name: short key (``bitfit_swin``).
        host: a key of :data:`HOST_TYPES`.
        policy: the ``PEFTFreezeHook`` arguments; None is full fine-tuning
            (the baseline config, no PEFT hook: everything trains).
        paper: where the method comes from.
        config_base: the method config base that task configs inherit
            (Full: none, its task configs are ``configs/baselines``).
    """
    name: str
    host: str
    policy: Optional[Dict]
    paper: str
    config_base: str = ''


# Zero-module methods on both hosts, as the Mona paper defines its baselines
# (arXiv 2408.08345, Sec. 4.1): Full trains everything; Fixed freezes the
# backbone and trains neck and heads; BitFit adds the backbone's bias
# vectors; NormTuning its norm layers; Partial-1 its last stage (Swin: stage
# 4 with its output norm; ViT: the last layer with the final norm).
POLICIES = {
    'full': (None, 'full fine-tuning (the baseline configs)'),
    'fixed': ({}, 'backbone frozen, neck and heads train'),
    'bitfit': (dict(train_biases=True),
               'Zaken et al., ACL 2022, arXiv 2106.10199'),
    'normtuning': (dict(train_norms=True),
                   'norm layers only (the Mona paper\'s NormTuning)'),
    'partial1': (dict(train_last_stage=True),
                 'last stage only (Yosinski et al., NeurIPS 2014; '
                 'the Mona paper\'s Partial-1)'),
}
POLICY_METHODS: Dict[str, PolicyMethod] = {
    f'{name}_{host}': PolicyMethod(
        f'{name}_{host}', host, policy, paper,
        config_base='' if policy is None else
        f'configs/_base_/methods/{name}_{host}.py')
    for name, (policy, paper) in POLICIES.items()
    for host in HOST_TYPES
}
