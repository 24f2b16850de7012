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

So a method added to the table is benchmarked with no edit here (a
method's own-paper form, ``variant_of`` set, only when named: its cost is
its default's). What is
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
        trains / infers: which of the two measurements apply.
        default: measured unless ``--variants`` says otherwise.
    """
    name: str
    summary: str
    method: Optional[Method] = None
    freeze_all: bool = False
    with_cp: bool = False
    adapter_cp: bool = False
    prepare: Optional[Callable[[nn.Module], None]] = None
    adapter_overrides: Optional[dict] = None
    trains: bool = True
    infers: bool = True
    default: bool = True

    @property
    def registered(self) -> bool:
        """Whether this checkout registers the variant's backbone type."""
        return self.method is None or \
            MODELS.get(self.method.backbone['type']) is not None


COMMON = (
    Variant('full', 'full fine-tuning: stock backbone, every weight trains'),
    Variant('full_cp', 'full fine-tuning, activation checkpointing',
            with_cp=True, infers=False),
    Variant('frozen', 'stock backbone frozen, only the head trains '
            '(lower bound)', freeze_all=True),
)


class ExtraForm(NamedTuple):
    """A variant ``<method>_<suffix>`` with other adapter arguments."""
    suffix: str
    summary: str
    adapter_overrides: dict


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
    variants = (
        Variant(name, f'{name}: {_describe(method.backbone)}', method,
                default=default),
        Variant(f'{name}_cp', f'{name}, checkpointed frozen blocks', method,
                with_cp=True, infers=False, default=default),
        Variant(f'{name}_adapter_cp', f'{name}, adapters recomputed in '
                'backward (adapter_cp=True)', method, adapter_cp=True,
                infers=False, default=default),
        Variant(f'{name}_deploy', f'{name}: {deploy}', method,
                prepare=method.deploy or merge_adapters, trains=False,
                default=default),
    )
    return variants + tuple(
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
                default=not pm.variant_of)
        for pm in POLICY_METHODS.values() if pm.host == host and pm.policy)


def host_variants(host: str) -> Tuple[Variant, ...]:
    """The references, the policy methods, then every form of every method
    on ``host``, in method-table order (read now: a method added to the
    table counts)."""
    return COMMON + policy_variants(host) + tuple(
        v for method in methods_for(host) for v in method_variants(method))


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
        wanted = {ALIASES.get(n, n) for n in names}
        unknown = [n for n in names if ALIASES.get(n, n) not in known]
        if unknown:
            raise ValueError(
                f'Unknown variants {unknown} for the {family.name} family; '
                f'choose from {list(known)} (aliases: {ALIASES}).')
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
    base['with_cp'] = variant.with_cp
    if variant.method is not None:
        base['adapter_cp'] = variant.adapter_cp
    return dict(type=cls, **base)


def prepare_backbone(backbone: nn.Module, variant: Variant) -> nn.Module:
    """Freeze or transform a built backbone as ``variant`` says."""
    if variant.freeze_all:
        backbone.requires_grad_(False)
    if variant.prepare is not None:
        variant.prepare(backbone)
    return backbone
