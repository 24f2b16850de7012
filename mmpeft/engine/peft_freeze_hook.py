"""The freezing policy of a PEFT run, enforced and reported before training.

The policy is declarative (which parts train) and applied by a pure function
(:func:`apply_freeze_policy`), shared with ``tools/count_params.py``. The
hook applies it at ``before_run``, then at ``before_train`` — after weight
init, checkpoint loading and the first ``model.train()``, with the optimizer
built — checks that it still holds and that the optimizer agrees, logs the
parameter table and writes it to ``work_dir/peft_params.json``.
"""
import copy
import os.path as osp
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import BaseOptimWrapper, OptimWrapperDict
from mmengine.registry import HOOKS
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from ..models.peft_backbone import _preview
from .export import write_text_atomic
from .param_table import (ADAPTERS, BACKBONE, HEAD, NECK, adapter_prefixes,
                          count_params, format_table, param_group,
                          unwrap_model)

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, _NormBase)


@dataclass(frozen=True)
class FreezePolicy:
    """Which parts train. Adapters always do; the rest of the backbone never
    does unless listed here; top-level children that are neither backbone,
    neck nor head (e.g. DETR's query embedding) train.

    The default is the official Mona policy: backbone frozen except the
    adapters, neck and heads fully trained. ``train_biases=True`` is
    RepAdapter's segmentation recipe (the official
    ``segmentation_task/tools/train.py`` trains every parameter whose name
    holds ``'bias'``): every bias vector of the backbone trains too -- of
    linear, conv and norm layers and nn.MultiheadAttention's
    ``in_proj_bias``; a table like Swin's ``relative_position_bias_table``
    is no bias vector and stays frozen unless ``train_bias_tables=True``
    (with both, the rule of the Mona paper's BitFit code: every parameter
    whose name holds 'bias'). ``train_norms=True`` is NormTuning.
    ``train_last_block=True`` is the Mona paper's Partial-1 (its code
    trains ``layers.3.blocks.1``: the backbone's last block, no output
    norm); ``train_last_stage=True`` the last stage with the norm of its
    output (Swin's ``stages.3`` + ``norm3``, ViT's last layer + ``ln1``).
    With no adapters and nothing else listed the policy is Fixed.
    """
    train_norms: bool = False  # backbone norms (adapters' own always train)
    train_patch_embed: bool = False  # backbone.patch_embed
    train_neck: bool = True
    train_head: bool = True  # every top-level child named '*head'
    train_biases: bool = False  # every backbone '*.bias' / '*_bias'
    train_last_stage: bool = False  # backbone.last_stage_prefixes()
    train_last_block: bool = False  # the last of backbone.blocks()
    train_bias_tables: bool = False  # backbone '*bias*' that is no vector


def is_bias(name: str) -> bool:
    """A bias vector: the parameter is called ``bias`` or ``*_bias``."""
    leaf = name.rsplit('.', 1)[-1]
    return leaf == 'bias' or leaf.endswith('_bias')


def is_bias_table(name: str) -> bool:
    """A parameter named for a bias that is no bias vector (Swin's
    ``relative_position_bias_table``)."""
    return 'bias' in name.rsplit('.', 1)[-1] and not is_bias(name)


def last_block_names(model: nn.Module) -> tuple:
    """``backbone.<prefix>`` of the backbone's last block (Partial-1)."""
    backbone = getattr(model, 'backbone', None)
    blocks = list(backbone.blocks()) if hasattr(backbone, 'blocks') else []
    if not blocks:
        raise FreezePolicyError(
            f'train_last_block: the backbone ({type(backbone).__name__}) does '
            'not list its blocks. Use an mmpeft host '
            '(AdapterSwinTransformer, AdapterVisionTransformer; '
            'adapters=dict() for none).')
    return tuple(f'backbone.{name}.' for name, module in
                 backbone.named_modules() if module is blocks[-1])


def last_stage_names(model: nn.Module) -> tuple:
    """``backbone.<prefix>`` of the backbone's last stage (Partial-1)."""
    backbone = getattr(model, 'backbone', None)
    prefixes = getattr(backbone, 'last_stage_prefixes', None)
    if prefixes is None:
        raise FreezePolicyError(
            f'train_last_stage: the backbone '
            f'({type(backbone).__name__}) does not say where its last stage '
            'is. Use an mmpeft host (AdapterSwinTransformer, '
            "AdapterVisionTransformer; adapters=dict() for none).")
    return tuple(f'backbone.{p}' for p in prefixes())


def policy_flags(model: nn.Module, policy: FreezePolicy) -> Dict[str, bool]:
    """``{parameter name: trains}`` for every parameter of ``model``."""
    model = unwrap_model(model)
    adapters = adapter_prefixes(model)
    norm_params = {
        f'{module_name}.{name}'
        for module_name, module in model.named_modules()
        if isinstance(module, NORM_TYPES)
        for name, _ in module.named_parameters(recurse=False)
    }
    last_part = ((last_stage_names(model) if policy.train_last_stage else
                  ()) + (last_block_names(model) if policy.train_last_block
                         else ()))
    flags = {}
    for name, _ in model.named_parameters():
        group = param_group(name, adapters)
        if group == ADAPTERS:
            trains = True
        elif group == BACKBONE:
            trains = ((policy.train_norms and name in norm_params)
                      or (policy.train_patch_embed
                          and name.startswith('backbone.patch_embed.'))
                      or (policy.train_biases and is_bias(name))
                      or (policy.train_bias_tables and is_bias_table(name))
                      or name.startswith(last_part))
        elif group == NECK:
            trains = policy.train_neck
        elif group == HEAD:
            trains = policy.train_head
        else:
            trains = True
        flags[name] = trains
    return flags


def apply_freeze_policy(model: nn.Module, policy: FreezePolicy) -> List[str]:
    """Set ``requires_grad`` by ``policy``; returns the names it changed."""
    flags = policy_flags(model, policy)
    changed = []
    for name, param in unwrap_model(model).named_parameters():
        if param.requires_grad != flags[name]:
            param.requires_grad = flags[name]
            changed.append(name)
    return changed


def policy_from_config(cfg) -> Optional[FreezePolicy]:
    """The policy of the config's PEFTFreezeHook, or None if it has none."""
    for hook_cfg in cfg.get('custom_hooks', []):
        hook_type = hook_cfg.get('type')
        if hook_type is PEFTFreezeHook or str(hook_type).split(
                '.')[-1] == PEFTFreezeHook.__name__:
            hook_cfg = copy.deepcopy(dict(hook_cfg))
            hook_cfg.pop('priority', None)
            return HOOKS.build(hook_cfg).policy
    return None


def optimizer_params(optim_wrapper) -> Iterator[nn.Parameter]:
    """Every parameter in the param groups of an OptimWrapper(Dict)."""
    groups = optim_wrapper.param_groups
    groups = groups.values() if isinstance(groups, dict) else [groups]
    for group_list in groups:
        for group in group_list:
            yield from group['params']


class FreezePolicyError(RuntimeError):
    """The model or its optimizer does not follow the freezing policy."""


@HOOKS.register_module()
class PEFTFreezeHook(Hook):
    """Enforce and report the freezing policy of a PEFT run.

    Use it in a config as
    ``custom_hooks = [dict(type='PEFTFreezeHook', train_norms=False)]``.

    Args:
        train_norms, train_patch_embed, train_neck, train_head,
            train_biases, train_last_stage, train_last_block,
            train_bias_tables: the :class:`FreezePolicy` (defaults: the
            official Mona policy; ``train_biases=True``: RepAdapter's
            segmentation recipe and BitFit).
        out_file: the parameter table as JSON, relative to ``work_dir``.

    Under DDP the wrapper only synchronises the parameters that required grad
    when it was built (in ``Runner.__init__``, before any hook), so when the
    policy changes a flag the hook re-wraps the model with the runner's own
    ``model_wrapper_cfg``.
    """
    priority = 'VERY_HIGH'

    def __init__(self,
                 train_norms: bool = False,
                 train_patch_embed: bool = False,
                 train_neck: bool = True,
                 train_head: bool = True,
                 train_biases: bool = False,
                 train_last_stage: bool = False,
                 train_last_block: bool = False,
                 train_bias_tables: bool = False,
                 out_file: str = 'peft_params.json'):
        self.policy = FreezePolicy(train_norms, train_patch_embed, train_neck,
                                   train_head, train_biases,
                                   train_last_stage, train_last_block,
                                   train_bias_tables)
        self.out_file = out_file

    def before_run(self, runner) -> None:
        changed = apply_freeze_policy(runner.model, self.policy)
        if changed:
            runner.logger.info(
                f'PEFTFreezeHook: {self.policy} changed requires_grad of '
                f'{len(changed)} parameters.')
        if changed and is_model_wrapper(runner.model):
            wrapper_cfg = copy.deepcopy(runner.cfg.get('model_wrapper_cfg'))
            runner.model = runner.wrap_model(wrapper_cfg, runner.model.module)
            runner.logger.info('PEFTFreezeHook: re-wrapped the model so that '
                               'DDP synchronises the new trainable set.')
        if changed and isinstance(runner.optim_wrapper,
                                  (BaseOptimWrapper, OptimWrapperDict)):
            self._rebuild_optimizer(runner)

    @staticmethod
    def _rebuild_optimizer(runner) -> None:
        """Build the optimizer (and the param schedulers driving it) again
        from the config when parameters the policy unfroze (backbone biases,
        norms) are missing from it: the runner built it before ``before_run``
        and mmengine's paramwise constructor leaves frozen parameters out."""
        in_optim = {id(p) for p in optimizer_params(runner.optim_wrapper)}
        model = unwrap_model(runner.model)
        missing = [
            name for name, param in model.named_parameters()
            if param.requires_grad and id(param) not in in_optim
        ]
        if not missing:
            return
        optim_cfg = runner.cfg.get('optim_wrapper')
        scheduler_cfg = runner.cfg.get('param_scheduler')
        if optim_cfg is None or (runner.param_schedulers is not None
                                 and scheduler_cfg is None):
            raise FreezePolicyError(
                f'PEFTFreezeHook: the policy trains {len(missing)} parameters '
                f'that were frozen when the runner built its optimizer '
                f'({_preview(missing)}), so the optimizer lacks them, and the '
                "runner's cfg has no optim_wrapper / param_scheduler to build "
                'it again from. Build the runner with Runner.from_cfg(cfg) '
                '(or pass cfg=dict(optim_wrapper=..., param_scheduler=...)).')
        runner.optim_wrapper = runner.build_optim_wrapper(
            copy.deepcopy(optim_cfg))
        runner.scale_lr(runner.optim_wrapper, runner.auto_scale_lr)
        if runner.param_schedulers is not None:
            runner.param_schedulers = runner.build_param_scheduler(
                copy.deepcopy(scheduler_cfg))
        runner.logger.info(
            f'PEFTFreezeHook: rebuilt the optimizer and its param schedulers '
            f'from the config, with the {len(missing)} parameters the policy '
            f'unfroze ({_preview(missing)}).')

    def before_train(self, runner) -> None:
        model = unwrap_model(runner.model)
        model.train()  # stock train() overrides may flip flags (frozen_stages)
        self.check(model, runner.optim_wrapper)
        table = count_params(model, policy=asdict(self.policy))
        runner.logger.info('PEFT parameters:\n' + format_table(table))
        if is_main_process():
            write_text_atomic(table.to_json() + '\n',
                              osp.join(runner.work_dir, self.out_file))

    def check(self, model: nn.Module, optim_wrapper) -> None:
        """Raise :class:`FreezePolicyError` on any drift from the policy."""
        flags = policy_flags(model, self.policy)
        in_optim = {id(p) for p in optimizer_params(optim_wrapper)}
        leaked, drifted, orphaned = [], [], []
        for name, param in unwrap_model(model).named_parameters():
            optimized = id(param) in in_optim
            if not flags[name] and param.requires_grad and optimized:
                leaked.append(name)
            elif flags[name] != param.requires_grad:
                drifted.append(name)
            elif flags[name] and not optimized:
                orphaned.append(name)
        problems = []
        if leaked:
            problems.append(
                f'{len(leaked)} parameters the policy freezes require grad '
                f'and sit in an optimizer param group, so they would train: '
                f'{_preview(leaked)}.')
        if drifted:
            problems.append(
                f'{len(drifted)} parameters changed requires_grad after the '
                f'policy was applied (at before_run): {_preview(drifted)}. '
                'A stock option may do this on model.train(): a backbone '
                '`frozen_stages` freezes whole stages with their adapters; '
                'set frozen_stages=-1 (the policy already freezes the '
                'pretrained weights) or change the policy.')
        if orphaned:
            problems.append(
                f'{len(orphaned)} parameters the policy trains are in no '
                f'optimizer param group and would never update: '
                f'{_preview(orphaned)}. Check optim_wrapper.paramwise_cfg / '
                'the optimizer constructor.')
        if not any(flags.values()):
            problems.append('Nothing is trainable: the model has no adapters '
                            'and the policy freezes everything else.')
        if problems:
            raise FreezePolicyError(f'PEFTFreezeHook ({self.policy}):\n  ' +
                                    '\n  '.join(problems))
