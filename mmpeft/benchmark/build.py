"""Workloads from a setting: one built and prepared model per variant, in
the backbone scope (a preset) or the model scope (an mm config)."""
import copy
from typing import Dict, Sequence

import torch
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS

from .data import synthetic_batch
from .run import Setting
from .variants import Variant, prepare_backbone, variant_backbone_cfg
from .workloads import (DEFAULT_OPTIM_WRAPPER, BackboneWorkload,
                        ModelWorkload, Workload)


def build_backbone_workloads(backbone_cfg: dict, setting: Setting,
                             variants: Sequence[Variant],
                             optim_cfg: dict = DEFAULT_OPTIM_WRAPPER
                             ) -> Dict[str, Workload]:
    """One backbone per variant from the stock ``backbone_cfg``, each with
    its probe head and random images, seeded alike."""
    workloads = {}
    for variant in variants:
        torch.manual_seed(0)
        cfg = variant_backbone_cfg(setting.family, backbone_cfg, variant)
        backbone = prepare_backbone(MODELS.build(cfg), variant)
        workloads[variant.name] = BackboneWorkload(
            backbone, setting.batch_size, setting.img_size, setting.device,
            setting.amp, optim_cfg)
    return workloads


def build_model_workloads(cfg, setting: Setting, variants: Sequence[Variant]
                          ) -> Dict[str, Workload]:
    """One detector / segmentor per variant, the config's backbone replaced
    by the variant's, trained with the config's own optim_wrapper."""
    from mmengine.registry import init_default_scope
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    optim_cfg = cfg.get('optim_wrapper', DEFAULT_OPTIM_WRAPPER)
    optim_cfg = {k: v for k, v in optim_cfg.items()}
    workloads = {}
    for variant in variants:
        torch.manual_seed(0)
        model_cfg = copy.deepcopy(cfg.model)
        model_cfg.backbone = variant_backbone_cfg(setting.family,
                                                  cfg.model.backbone, variant)
        model = MODELS.build(model_cfg)
        if setting.device.type == 'cpu':  # SyncBN needs CUDA + a group
            model = revert_sync_batchnorm(model)
        prepare_backbone(model.backbone, variant)
        data = synthetic_batch(scope, cfg.model, setting.batch_size,
                               setting.img_size)
        workloads[variant.name] = ModelWorkload(model, data, setting.device,
                                                setting.amp, optim_cfg)
    return workloads
