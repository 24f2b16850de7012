"""The variants of a backbone family, derived from the method table.

Every family has the same three references (``full``, ``full_cp``,
``frozen``); every method of :data:`mmpeft.methods.METHODS` on the family's
host adds four forms of itself:

- ``<name>``: the training form, nothing recomputed;
- ``<name>_cp``: its frozen blocks checkpointed (``with_cp=True``);
- ``<name>_adapter_cp``: its adapters recomputed in backward, the frozen
  blocks not (``adapter_cp=True``);
- ``<name>_deploy``: the deploy form, from the method's ``deploy`` or else
  :func:`mmpeft.merge_adapters`; inference only.

Every freeze-policy method of :data:`mmpeft.methods.POLICY_METHODS` (BitFit,
NormTuning, Partial-1) adds ``<name>``: the host's stock blocks with the
policy's part of the backbone training (training only: its deploy model is
the stock backbone, which ``full`` measures; Fixed is ``frozen``).

Every method also gets the host forms of :data:`HOST_FORMS`, measured when
named: adapters in the late blocks only (``<name>_last2``: the last two
Swin stages; ``<name>_lasthalf``: the last half of the ViT layers), frozen
activations saved in bfloat16 (``<name>_bf16saves``) and, on the ViT, the
fused attention kernel (``<name>_sdpa``).

Like for like: every ratio compares one attention kernel. A variant whose
host runs another kernel than the stock backbone (mmpeft's ViT layers:
``attention='packed'`` by default, or ``'sdpa'``) is compared with
``full_<kernel>``, full fine-tuning on that host with that kernel, which
:func:`add_kernel_references` adds to a run that needs it.

``--variants all-train`` selects the frontier (:data:`GROUPS`): the
references, every policy and method, and each method's host forms.

So a method added to the table is benchmarked with no edit here (a
method's own-paper form, ``variant_of`` set, only when named: its cost is
its default's; it is no row of the frontier either). What is
not derived: comparisons of one method's implementations
(:data:`EXTRA_FORMS`) and the names earlier versions used
(:data:`ALIASES`).
"""
import copy
import inspect
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from mmengine.registry import MODELS
from torch import nn

from ..methods import HOST_TYPES, POLICY_METHODS, Method, methods_for
from ..models import merge_adapters

MEASUREMENTS = ('train', 'infer')


@dataclass(frozen=True)
class Variant:
    """One way of fine-tuning (or deploying) a backbone family.

    Args:
        name: key in the results (``full`` is the reference of every ratio).
        summary: one line for the results.
        method: the method-table entry whose backbone this is; None for the
            stock backbone.
        freeze_all: freeze every backbone weight (the frozen stock backbone).
        with_cp: activation checkpointing of every block (non-reentrant in
            mmpeft backbones; the stock backbones use reentrant checkpointing,
            which is correct there because their weights all train).
        adapter_cp: the PEFT backbone's ``adapter_cp`` (adapters recomputed
            in backward, frozen blocks not).
        prepare: in-place transform after building, e.g. merging adapters.
        adapter_overrides: keys replaced in the method's ``adapter_cfg``.
        host_args: backbone arguments of the variant, from the backbone
            config it is built from (e.g. ``adapter_blocks``).
        trains / infers: which of the two measurements apply.
        default: measured unless ``--variants`` says otherwise.
        frontier: in ``--variants all-train`` (every method's training
            cost).
        reference: the variant its ratios are to; None: full fine-tuning
            with the same attention kernel (:func:`reference_of`).
        row: its label across hosts in the frontier table (``lora, late
            blocks`` for ``lora_swin_last2`` and ``lora_vit_lasthalf``);
            empty: the name.
    """
    name: str
    summary: str
    method: Optional[Method] = None
    freeze_all: bool = False
    with_cp: bool = False
    adapter_cp: bool = False
    prepare: Optional[Callable[[nn.Module], None]] = None
    adapter_overrides: Optional[dict] = None
    host_args: Optional[Callable[[dict], dict]] = None
    trains: bool = True
    infers: bool = True
    default: bool = True
    frontier: bool = False
    reference: Optional[str] = None
    row: str = ''

    @property
    def registered(self) -> bool:
        """Whether this checkout registers the variant's backbone type."""
        return self.method is None or \
            MODELS.get(self.method.backbone['type']) is not None


COMMON = (
    Variant('full', 'full fine-tuning: stock backbone, every weight trains',
            frontier=True),
    Variant('full_cp', 'full fine-tuning, activation checkpointing',
            with_cp=True, infers=False),
    Variant('frozen', 'stock backbone frozen, only the head trains '
            '(lower bound)', freeze_all=True, frontier=True),
)

# The attention kernels of a host besides its stock one
# (mmpeft.models.vit.ATTENTION_KERNELS; Swin blocks keep the stock one).
ATTENTION_KERNELS = {'vit': ('packed', 'sdpa')}
# The kernels a user picks for full fine-tuning too: a row of the frontier.
USER_KERNELS = ('sdpa', )


def kernel_references(host: str) -> Tuple[Variant, ...]:
    """``full_<kernel>``: full fine-tuning on the PEFT host with no adapters
    and that attention kernel (``train_backbone=True``)."""
    return tuple(
        Variant(f'full_{kernel}', f'full fine-tuning, {kernel} attention '
                f'({HOST_TYPES[host]}(attention={kernel!r}, '
                'train_backbone=True))',
                Method(f'full_{kernel}', host,
                       dict(type=HOST_TYPES[host], adapters=dict(),
                            attention=kernel, train_backbone=True),
                       'reference'),
                infers=False, default=False, reference='full',
                frontier=kernel in USER_KERNELS,
                row=f'full, {kernel} attention')
        for kernel in ATTENTION_KERNELS.get(host, ()))


class ExtraForm(NamedTuple):
    """A variant ``<method>_<suffix>`` with other adapter arguments."""
    suffix: str
    summary: str
    adapter_overrides: dict


class HostForm(NamedTuple):
    """A training variant ``<method>_<suffix>`` of every method on
    ``hosts``, built with the backbone arguments ``host_args(cfg)``;
    ``row`` names it across hosts."""
    suffix: str
    summary: str
    hosts: Tuple[str, ...]
    host_args: Callable[[dict], dict]
    row: str


def _last_two_stages(cfg: dict) -> dict:
    return dict(adapter_blocks=dict(stages=[-2, -1]))


def _last_half_layers(cfg: dict) -> dict:
    layers = cfg.get('num_layers', 12)  # mmseg's default depth
    return dict(adapter_blocks=dict(layers=list(range(layers // 2, layers))))


def _bf16_saves(cfg: dict) -> dict:
    return dict(frozen_activations_dtype='bfloat16')


def _sdpa(cfg: dict) -> dict:
    return dict(attention='sdpa')


# The cost levers of the hosts, for every method (measured when named, and
# in --variants all-train).
HOST_FORMS = (
    HostForm('last2', 'adapters in the last two stages only', ('swin', ),
             _last_two_stages, 'late blocks'),
    HostForm('lasthalf', 'adapters in the last half of the layers only',
             ('vit', ), _last_half_layers, 'late blocks'),
    HostForm('bf16saves', 'frozen activations saved in bfloat16',
             ('swin', 'vit'), _bf16_saves, 'bf16 saves'),
    HostForm('sdpa', 'fused attention kernel (attention=\'sdpa\')',
             ('vit', ), _sdpa, 'sdpa attention'),
)


def _row(name: str, host: str) -> str:
    """A method's name across hosts: ``lora_swin`` -> ``lora``."""
    return name[:-len(host) - 1] if name.endswith(f'_{host}') else name


# Implementation comparisons of one method, keyed by method name (the
# benchmark's own concern, not the method's); measured only when named.
EXTRA_FORMS: Dict[str, Tuple[ExtraForm, ...]] = {
    'mona': (ExtraForm('literal', 'literal three-conv branch (official form)',
                       dict(fused=False)), ),
}

# Names of deploy variants before they were derived, and the policy
# methods that are references already; still accepted.
ALIASES = {
    'mimi_shrunk': 'mimi_deploy',
    'repadapter_merged': 'repadapter_deploy',
    **{f'fixed_{host}': 'frozen' for host in HOST_TYPES},
    **{f'full_{host}': 'full' for host in HOST_TYPES},
}


def _describe(backbone: dict) -> str:
    """``Type(arg=value, ...)`` of a backbone config."""
    args = ', '.join(f'{k}={v!r}' for k, v in backbone.items() if k != 'type')
    return f"{backbone['type']}({args})"


def _first_paragraph(doc: Optional[str]) -> str:
    return ' '.join((doc or '').strip().split('\n\n')[0].split()).rstrip('.')


def _takes(backbone_type: str, args: dict) -> bool:
    """Whether the backbone class takes every argument of ``args`` (a host
    form applies to the methods whose backbone has the host's options, less
    those it refuses: E3VA's); an unregistered class is left to
    ``Variant.registered``."""
    cls = MODELS.get(backbone_type)
    if cls is None:
        return True
    names = {name for klass in cls.__mro__ if '__init__' in klass.__dict__
             for name in inspect.signature(klass.__init__).parameters}
    names -= set(getattr(cls, 'refused_host_options', ()))
    return set(args) <= names


def method_variants(method: Method) -> Tuple[Variant, ...]:
    """The derived forms of ``method``, then its extra forms."""
    name = method.name
    if method.deploy is not None:
        deploy = _first_paragraph(method.deploy.__doc__)
    elif method.merges:
        deploy = 'merged into the stock backbone (merge_adapters)'
    else:
        deploy = 'deploy form (merge_adapters)'
    default = not method.variant_of  # own-paper forms: only when named
    row = _row(name, method.host)
    variants = (
        Variant(name, f'{name}: {_describe(method.backbone)}', method,
                default=default, frontier=default, row=row),
        Variant(f'{name}_cp', f'{name}, checkpointed frozen blocks', method,
                with_cp=True, infers=False, default=default),
        Variant(f'{name}_adapter_cp', f'{name}, adapters recomputed in '
                'backward (adapter_cp=True)', method, adapter_cp=True,
                infers=False, default=default),
        Variant(f'{name}_deploy', f'{name}: {deploy}', method,
                prepare=method.deploy or merge_adapters, trains=False,
                default=default),
    )
    host_forms = tuple(
        Variant(f'{name}_{form.suffix}', f'{name}, {form.summary}', method,
                host_args=form.host_args, infers=False, default=False,
                frontier=default, row=f'{row}, {form.row}')
        for form in HOST_FORMS if method.host in form.hosts
        and _takes(method.backbone['type'], form.host_args({})))
    return variants + host_forms + tuple(
        Variant(f'{name}_{form.suffix}', f'{name}, {form.summary}', method,
                adapter_overrides=form.adapter_overrides, default=False)
        for form in EXTRA_FORMS.get(name, ()))


class _ApplyPolicy:
    """``prepare`` of a policy variant: the freeze policy on the backbone."""

    def __init__(self, policy: dict):
        self.policy = policy

    def __call__(self, backbone: nn.Module) -> None:
        from ..engine.peft_freeze_hook import (FreezePolicy,
                                               apply_freeze_policy)
        holder = nn.Module()
        holder.backbone = backbone  # the policy names backbone.* params
        apply_freeze_policy(holder, FreezePolicy(**self.policy))


def policy_variants(host: str) -> Tuple[Variant, ...]:
    """One training variant per freeze-policy method on ``host`` that
    trains part of the backbone (Full and Fixed are ``full`` / ``frozen``)."""
    return tuple(
        Variant(pm.name, f'{pm.name}: stock blocks, '
                f'{", ".join(f"{k}={v}" for k, v in pm.policy.items())}',
                Method(pm.name, host, dict(type=HOST_TYPES[host],
                                           adapters=dict()), pm.paper),
                prepare=_ApplyPolicy(pm.policy), infers=False,
                default=not pm.variant_of, frontier=not pm.variant_of,
                row=_row(pm.name, host))
        for pm in POLICY_METHODS.values() if pm.host == host and pm.policy)


def host_variants(host: str) -> Tuple[Variant, ...]:
    """The references, the policy methods, then every form of every method
    on ``host``, in method-table order (read now: a method added to the
    table counts)."""
    return COMMON + kernel_references(host) + policy_variants(host) + tuple(
        v for method in methods_for(host) for v in method_variants(method))


# Names that select several variants: the frontier (every method's training
# cost, with the references it is compared to).
GROUPS = {'all-train': lambda variant: variant.frontier}


def measures(variant: Variant, measure: Sequence[str], kind: str) -> bool:
    """Whether ``variant`` gets the ``kind`` ('train' or 'infer') step."""
    return kind in measure and (variant.trains if kind == 'train'
                                else variant.infers)


def select_variants(family, names: Optional[Sequence[str]] = None,
                    measure: Sequence[str] = MEASUREMENTS) -> List[Variant]:
    """The variants to measure: ``names`` (or their :data:`ALIASES`) in
    family order, or the defaults, less those with nothing to ``measure``
    (e.g. a deploy form when only training is measured). Variants whose
    backbone is not registered are skipped by default and an error when
    named."""
    known = {v.name: v for v in family.variants}
    if names:
        grouped = {v.name for n in names if n in GROUPS
                   for v in family.variants if GROUPS[n](v) and v.registered}
        names = [n for n in names if n not in GROUPS]
        wanted = {ALIASES.get(n, n) for n in names} | grouped
        unknown = [n for n in names if ALIASES.get(n, n) not in known]
        if unknown:
            raise ValueError(
                f'Unknown variants {unknown} for the {family.name} family; '
                f'choose from {list(known)}, the groups {list(GROUPS)} '
                f'(aliases: {ALIASES}).')
        chosen = [v for v in family.variants if v.name in wanted]
        missing = [v.name for v in chosen if not v.registered]
        if missing:
            raise ValueError(
                f'Variants {missing} need a backbone that is not registered '
                'in this checkout; leave them out of --variants.')
    else:
        chosen = [v for v in family.variants if v.default and v.registered]
    chosen = [v for v in chosen if measures(v, measure, 'train')
              or measures(v, measure, 'infer')]
    if 'full' not in [v.name for v in chosen]:
        raise ValueError('The variants must include `full`: every ratio is '
                         'relative to full fine-tuning.')
    return chosen


def skipped_variants(family) -> List[str]:
    """Default variants whose backbone is not registered in this checkout."""
    return [v.name for v in family.variants
            if v.default and not v.registered]


def resolve_type(backbone_type):
    """The class a config ``type`` names, in the current default scope."""
    if not isinstance(backbone_type, str):
        return backbone_type
    with MODELS.switch_scope_and_registry(None) as registry:
        return registry.get(backbone_type)


def variant_backbone_cfg(family, base_cfg: dict, variant: Variant) -> dict:
    """The backbone config of ``variant`` from a family backbone config.

    The base config gives the architecture: its arguments that the stock
    backbone accepts (all of them when it is already the variant's class),
    without pretrained loading (benchmarks use random weights). The method
    table gives the method's own arguments, except those a config of the
    variant's own class sets (``--config`` of a Mona config with
    ``inner_dim=16`` measures that Mona).
    """
    base = dict(base_cfg)
    config_type = base.pop('type')
    base.pop('init_cfg', None)
    base.pop('pretrained', None)
    method_cfg = copy.deepcopy(variant.method.backbone) if variant.method \
        else dict(type=family.stock)
    cls = resolve_type(method_cfg.pop('type'))
    if resolve_type(config_type) is not cls:
        accepted = inspect.signature(family.stock.__init__).parameters
        base = {k: v for k, v in base.items() if k in accepted}
        base.update(method_cfg)
    else:
        base = dict(method_cfg, **base)
    if variant.adapter_overrides:
        if 'adapter_cfg' not in base:
            raise ValueError(
                f'Variant {variant.name} changes the adapter_cfg of method '
                f'{variant.method.name}, whose method-table backbone sets '
                'none; add adapter_cfg to that entry in mmpeft/methods.py.')
        base['adapter_cfg'] = dict(base['adapter_cfg'],
                                   **variant.adapter_overrides)
    if variant.host_args is not None:
        base.update(variant.host_args(base))
    base['with_cp'] = variant.with_cp
    if variant.method is not None:
        base['adapter_cp'] = variant.adapter_cp
    return dict(type=cls, **base)


def attention_kernel(backbone_cfg: dict) -> str:
    """The attention kernel a built backbone config runs: the ``attention``
    argument of an mmpeft host that has one (or its default), else the
    stock backbone's own."""
    cls = resolve_type(backbone_cfg['type'])
    for klass in cls.__mro__:
        init = klass.__dict__.get('__init__')
        param = None if init is None else \
            inspect.signature(init).parameters.get('attention')
        if param is not None and klass.__module__.startswith('mmpeft.'):
            return backbone_cfg.get('attention', param.default)
    return 'stock'


def reference_of(family, base_cfg: dict, variant: Variant) -> str:
    """The variant ``variant``'s ratios are to: full fine-tuning with the
    same attention kernel (``full`` for the stock one)."""
    if variant.name == 'full':
        return 'full'
    if variant.reference is not None:
        return variant.reference
    kernel = attention_kernel(variant_backbone_cfg(family, base_cfg, variant))
    return 'full' if kernel == 'stock' else f'full_{kernel}'


def add_kernel_references(family, base_cfg: dict,
                          variants: Sequence[Variant]
                          ) -> Tuple[List[Variant], Dict[str, str], List[str]]:
    """``variants`` with the ``full_<kernel>`` references they need, in
    family order; each variant's reference; a note per kernel that differs
    from the stock backbone's."""
    references = {v.name: reference_of(family, base_cfg, v) for v in variants}
    known = {v.name: v for v in family.variants}
    missing = set(references.values()) - {v.name for v in variants}
    unknown = missing - set(known)
    if unknown:
        raise ValueError(f'No reference variant {sorted(unknown)} in the '
                         f'{family.name} family.')
    added = [known[name] for name in missing]
    references.update({v.name: reference_of(family, base_cfg, v)
                       for v in added})
    names = {v.name for v in variants} | missing
    chosen = [v for v in family.variants if v.name in names]
    notes = []
    for reference in dict.fromkeys(references.values()):
        users = [name for name, ref in references.items()
                 if ref == reference and name != reference]
        if reference != 'full' and users:
            notes.append(
                f'{", ".join(users)}: their host runs the '
                f'{reference[len("full_"):]} attention kernel, the stock '
                f'backbone its own; their ratios are to {reference} (full '
                'fine-tuning with that kernel), whose ratios are to full.')
    return chosen, references, notes


def prepare_backbone(backbone: nn.Module, variant: Variant) -> nn.Module:
    """Freeze or transform a built backbone as ``variant`` says."""
    if variant.freeze_all:
        backbone.requires_grad_(False)
    if variant.prepare is not None:
        variant.prepare(backbone)
    return backbone
