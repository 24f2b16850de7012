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
        variant_of: for a method's own paper's form (``<name>_orig``), the
            name of the default it varies (the Mona paper's baseline).
    """
    name: str
    host: str
    backbone: Dict
    paper: str
    merges: bool = False
    config_base: str = ''
    deploy: Optional[Callable] = None
    variant_of: str = ''


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
# 2408.08345, Table 1), each on both generic hosts. The default of each
# (`<name>`) is the Mona paper's baseline as its released code runs it
# (Leiyi-Hu/mona, Swin-Transformer-Object-Detection/mmdet/models/backbones/
# swin_transformer_<name>.py; LoRand: the same authors' DongshuoYin/CoLin,
# MMDetection/mmdet/models/backbones/swin_lorand.py); `<name>_orig` is the
# method's own paper / official code where that differs (ORIGINAL). The ViT
# forms put the same adapter at the same place of each encoder layer.
# Swin-B counts of both, next to the official code's: README "Comparison
# methods" and tests/test_comparison_configs.py.
HOST_TYPES = {'swin': 'AdapterSwinTransformer',
              'vit': 'AdapterVisionTransformer',
              'dinov2': 'AdapterPretrainViT'}
ORIGINAL = '_orig'  # suffix of a method's own paper's form
# The hosts of the own-paper forms: those of the Mona paper's table.
ORIGINAL_HOSTS = ('swin', 'vit')
MONA_PAPER = 'the Mona paper\'s baseline (arXiv 2408.08345, released code)'
ADAPTER = dict(type='BottleneckAdapter', hidden_dim=64, scale=1.0,
               dropout=0.1)
LORAND = dict(type='LoRand', factor=2, num_branch=4, kernel_dim=8)
HOULSBY = dict(type='HoulsbyAdapter', hidden_dim=64)
COMPARISON = {
    # Mona code: Adapter(dim) = Linear(C, 64), exact GELU, dropout 0.1,
    # Linear(64, C), trunc-normal(0.02) init, on the attention and MLP
    # outputs inside drop-path.
    'adapter': (dict(attn=dict(series=dict(ADAPTER)),
                     ffn=dict(series=dict(ADAPTER))),
                f'{MONA_PAPER} of Houlsby et al., arXiv 1902.00751', False),
    # Mona code: the same bottleneck scaled by 0.1 on the FFN input (before
    # norm2), added beside drop_path(mlp(norm2(x))).
    'adaptformer': (dict(ffn=dict(parallel=dict(ADAPTER, scale=0.1))),
                    f'{MONA_PAPER} of Chen et al., arXiv 2205.13535',
                    False),
    # Mona code: qkv = MergedLinear(C, 3C, r=64, enable_lora=[True, False,
    # True]): q and v, a rank-64 pair each, loralib's lora_alpha = 1 (scale
    # 1/64), no dropout.
    'lora': (dict(attn=dict(qkv=dict(type='LoRA', r=64, alpha=1,
                                     dropout=0.0,
                                     enable_lora=[True, False, True]))),
             f'{MONA_PAPER} of Hu et al., arXiv 2106.09685', True),
    # CoLin code: x = x + lorand(drop_path(attn(norm1(x)))), the same for
    # the FFN; m = C/2, 4 branches, 8x8 kernels, a kernel per projection.
    'lorand': (dict(attn=dict(after_drop_path=dict(LORAND)),
                    ffn=dict(after_drop_path=dict(LORAND))),
               f'{MONA_PAPER}: Yin et al., CVPR 2023 ("1% VS 100%")', False),
    # Houlsby's adapter as adapter-bert defines it (tanh GELU, no dropout,
    # std 1e-3, near-identity start) on each sublayer output (Fig. 2); its
    # method base also trains the backbone's LayerNorms, as the paper does.
    'adapter' + ORIGINAL: (dict(attn=dict(series=dict(HOULSBY)),
                                ffn=dict(series=dict(HOULSBY))),
                           'Houlsby et al., ICML 2019, arXiv 1902.00751 '
                           '(adapter-bert)', False),
    # The official image-run defaults (AdaptFormer main_image.py
    # tuning_config): ffn_num 64, scalar 0.1, no layernorm, ReLU, 'lora'
    # init (up zero), dropout 0.1.
    'adaptformer' + ORIGINAL: (dict(ffn=dict(parallel=dict(
        type='AdaptFormer', hidden_dim=64, scale=0.1, layernorm='none',
        dropout=0.1))), 'Chen et al., NeurIPS 2022, arXiv 2205.13535',
                               False),
    # One rank-64 update of the whole fused qkv (k too), alpha = r (scale
    # 1): the form mmpeft ran before the Mona paper's code was read. The
    # LoRA paper itself adapts Wq and Wv with a pair each (as the default)
    # and sets alpha to the first r it tries (scale 1).
    'lora' + ORIGINAL: (dict(attn=dict(qkv=dict(type='LoRA', r=64, alpha=64,
                                                dropout=0.0))),
                        'Hu et al., ICLR 2022, arXiv 2106.09685', True),
}


def default_key(name: str, host: str) -> str:
    """The table key of the default that ``name`` (``<default>_orig``) is
    the own-paper form of, on ``host``; '' for a default."""
    if not name.endswith(ORIGINAL):
        return ''
    return f'{name[:-len(ORIGINAL)]}_{host}'


def hosts_of_form(name: str) -> Tuple[str, ...]:
    """The hosts a table entry ``name`` is built for: every host, an
    own-paper form (``<default>_orig``) only ORIGINAL_HOSTS."""
    return ORIGINAL_HOSTS if name.endswith(ORIGINAL) else tuple(HOST_TYPES)


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
        # A highway of dual low-rank adapters beside the frozen backbone,
        # which runs without a graph; nothing merges (a side network).
        # m = 64, k = 8 are our choice (mmpeft/adapters/e3va.py).
        *(Method(f'e3va_{host}', host,
                 dict(type=backbone, adapter_cfg=dict(
                     type='E3VAAdapter', hidden_dim=64, rank=8)),
                 paper='Yin et al., ACM MM 2023, arXiv 2306.09729',
                 config_base=f'configs/_base_/methods/e3va_{host}.py')
          for host, backbone in (('swin', 'E3VASwinTransformer'),
                                 ('vit', 'E3VAViT'),
                                 ('dinov2', 'E3VAPretrainViT'))),
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
                 config_base=f'configs/_base_/methods/{name}_{host}.py',
                 variant_of=default_key(name, host))
          for name, (adapters, paper, merges) in COMPARISON.items()
          for host in hosts_of_form(name)),
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
        variant_of: as :attr:`Method.variant_of`.
    """
    name: str
    host: str
    policy: Optional[Dict]
    paper: str
    config_base: str = ''
    variant_of: str = ''


# Zero-module methods on both hosts. The defaults are the Mona paper's
# baselines as its released code freezes them (arXiv 2408.08345, Sec. 4.1;
# Leiyi-Hu/mona swin_transformer_<name>.py train the parameters whose name
# holds a word): Full trains everything; Fixed freezes the backbone and
# trains neck and heads; BitFit every backbone parameter named 'bias' (with
# Swin's relative-position bias tables); NormTuning its norm layers ('norm');
# Partial-1 its last block only ('layers.3.blocks.1' of Swin, no output norm;
# on ViT the last layer, no final norm: a ViT has no stages, and its last
# layer is, as Swin's last block, the last transformer block before the
# output norms). `<name>_orig` are the methods' own forms: BitFit's bias
# vectors only (on ViT, which has no bias tables, the same set), and the
# last stage with its output norm (Swin: stages.3 + norm3; ViT: the last
# layer + ln1), mmpeft's earlier reading of "Partial-1".
POLICIES = {
    'full': (None, 'full fine-tuning (the baseline configs)'),
    'fixed': ({}, 'backbone frozen, neck and heads train'),
    'bitfit': (dict(train_biases=True, train_bias_tables=True),
               f'{MONA_PAPER} of Zaken et al., arXiv 2106.10199'),
    'normtuning': (dict(train_norms=True),
                   'norm layers only (the Mona paper\'s NormTuning)'),
    'partial1': (dict(train_last_block=True),
                 f'{MONA_PAPER}: last block only (Yosinski et al., '
                 'NeurIPS 2014)'),
    'bitfit' + ORIGINAL: (dict(train_biases=True),
                          'Zaken et al., ACL 2022, arXiv 2106.10199 '
                          '(bias vectors)'),
    'partial1' + ORIGINAL: (dict(train_last_stage=True),
                            'last stage with its output norm (Yosinski et '
                            'al., NeurIPS 2014)'),
}
POLICY_METHODS: Dict[str, PolicyMethod] = {
    f'{name}_{host}': PolicyMethod(
        f'{name}_{host}', host, policy, paper,
        config_base='' if policy is None else
        f'configs/_base_/methods/{name}_{host}.py',
        variant_of=default_key(name, host))
    for name, (policy, paper) in POLICIES.items()
    for host in hosts_of_form(name)
}
