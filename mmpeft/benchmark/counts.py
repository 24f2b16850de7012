"""What a variant costs whatever the machine: parameters and FLOPs."""
from typing import Tuple

import torch
from mmengine.analysis import FlopAnalyzer
from torch import nn


def count_params(module: nn.Module) -> Tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(module.parameters())
    return (sum(p.numel() for p in params if p.requires_grad),
            sum(p.numel() for p in params))


def backbone_gflops(backbone: nn.Module, image: torch.Tensor) -> float:
    """Inference GFLOPs of ``backbone`` on one image, counted by mmengine's
    FlopAnalyzer (one multiply-add = one FLOP, the fvcore convention)."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        analyzer = FlopAnalyzer(backbone, (image, ))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        flops = analyzer.total()
    backbone.train(was_training)
    return flops / 1e9
