"""Parameter accounting: who owns how many parameters, and how many train.

One pure function, :func:`count_params`, serves the training hook
(:class:`~mmpeft.engine.PEFTFreezeHook`) and ``tools/count_params.py``, so the
log of a run and the offline tool print the same numbers. Parameters are
grouped by their place in the model: the pretrained backbone weights, the
adapters inside it, the neck, the heads (every top-level child whose name ends
in ``head``) and every other top-level child on its own row. Percentages use
two fixed denominators for every row, both printed with the table.
"""
import json
from dataclasses import asdict, dataclass, field
from typing import Dict, List

from mmengine.model import is_model_wrapper
from torch import nn

from ..adapters import iter_adapters

BACKBONE = 'backbone (pretrained)'
ADAPTERS = 'adapters'
NECK = 'neck'
HEAD = 'head'
MODEL_OWN = '(model itself)'


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a DDP / FSDP / other mmengine model wrapper."""
    return model.module if is_model_wrapper(model) else model


def adapter_prefixes(model: nn.Module) -> tuple:
    """``'<name>.'`` of every adapter module in ``model``."""
    return tuple(f'{name}.' for name, _ in iter_adapters(model))


def param_group(name: str, adapters: tuple) -> str:
    """The table row of the parameter called ``name`` in the model."""
    if name.startswith(adapters):
        return ADAPTERS
    child = name.split('.', 1)[0] if '.' in name else MODEL_OWN
    if child == 'backbone':
        return BACKBONE
    if child == 'neck':
        return NECK
    if child.endswith('head'):
        return HEAD
    return child


@dataclass
class ParamRow:
    group: str
    total: int
    trainable: int


@dataclass
class ParamTable:
    """Rows in model order (backbone, adapters, neck, head, others).

    ``backbone_params`` is the pretrained backbone without its adapters and
    ``model_params`` every parameter of the model, adapters included: the
    denominators of the two percentage columns, which both divide a row's
    *trainable* count.
    """
    rows: List[ParamRow]
    backbone_params: int
    model_params: int
    policy: Dict = field(default_factory=dict)

    @property
    def trainable(self) -> int:
        return sum(row.trainable for row in self.rows)

    @property
    def total_row(self) -> ParamRow:
        return ParamRow('total', self.model_params, self.trainable)

    def row(self, group: str) -> ParamRow:
        for row in self.rows:
            if row.group == group:
                return row
        return ParamRow(group, 0, 0)

    def pct_backbone(self, count: int) -> float:
        return 100.0 * count / self.backbone_params if self.backbone_params \
            else float('nan')

    def pct_model(self, count: int) -> float:
        return 100.0 * count / self.model_params if self.model_params \
            else float('nan')

    def to_dict(self) -> dict:
        """JSON-ready: the rows with their percentages, the total, the
        denominators and the policy that produced the flags."""

        def with_pct(row: ParamRow) -> dict:
            return dict(asdict(row),
                        trainable_pct_of_backbone=_round(
                            self.pct_backbone(row.trainable)),
                        trainable_pct_of_model=_round(
                            self.pct_model(row.trainable)))

        return dict(
            groups=[with_pct(row) for row in self.rows],
            total=with_pct(self.total_row),
            denominators=dict(
                backbone=self.backbone_params,
                backbone_means='pretrained backbone parameters, adapters '
                'excluded',
                model=self.model_params,
                model_means='all model parameters, adapters included',
                percentages_of='trainable parameters of the row'),
            policy=self.policy)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _round(value: float) -> float:
    return None if value != value else round(value, 4)  # NaN -> null


def count_params(model: nn.Module, policy: Dict = None) -> ParamTable:
    """Count the parameters of ``model`` (wrappers are unwrapped) per group,
    as they stand: ``requires_grad`` decides what is trainable.

    ``policy`` is only recorded with the numbers (see :class:`ParamTable`).
    """
    model = unwrap_model(model)
    adapters = adapter_prefixes(model)
    rows: Dict[str, ParamRow] = {
        group: ParamRow(group, 0, 0)
        for group in (BACKBONE, ADAPTERS, NECK, HEAD)
    }
    for name, param in model.named_parameters():
        group = param_group(name, adapters)
        row = rows.setdefault(group, ParamRow(group, 0, 0))
        row.total += param.numel()
        row.trainable += param.numel() if param.requires_grad else 0
    shown = [
        row for row in rows.values()
        if row.total or row.group in (BACKBONE, ADAPTERS)
    ]
    return ParamTable(rows=shown,
                      backbone_params=rows[BACKBONE].total,
                      model_params=sum(row.total for row in shown),
                      policy=dict(policy or {}))


def format_table(table: ParamTable) -> str:
    """Aligned text table with the denominators stated under it."""
    header = ('group', 'total', 'trainable', '% of backbone', '% of model')
    lines = [(row.group, f'{row.total:,}', f'{row.trainable:,}',
              _fmt_pct(table.pct_backbone(row.trainable)),
              _fmt_pct(table.pct_model(row.trainable)))
             for row in table.rows + [table.total_row]]
    widths = [
        max(len(line[i]) for line in [header] + lines)
        for i in range(len(header))
    ]

    def render(cells) -> str:
        return '  '.join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths)))

    rule = '-' * len(render(header))
    out = [render(header), rule] + [render(line) for line in lines[:-1]]
    out += [rule, render(lines[-1]), rule]
    out.append('% columns: trainable parameters of the row divided by '
               f'{table.backbone_params:,} (pretrained backbone, adapters '
               f'excluded) and by {table.model_params:,} (whole model, '
               'adapters included).')
    return '\n'.join(out)


def _fmt_pct(value: float) -> str:
    return '-' if value != value else f'{value:.2f}%'
