"""What a variant costs whatever the machine: parameters and FLOPs."""
from math import prod
from typing import Any, List, Tuple

import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from torch import nn


def count_params(module: nn.Module) -> Tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(module.parameters())
    return (sum(p.numel() for p in params if p.requires_grad),
            sum(p.numel() for p in params))


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """Multiply-adds of ``aten::scaled_dot_product_attention``: q k^T and
    the weighted sum of v, as the explicit attention's two matmuls count.
    mmengine's FlopAnalyzer has no handle for it and would count 0."""
    query, key, value = (get_shape(v) for v in inputs[:3])
    queries, keys = query[-2], key[-2]
    batch = prod(query[:-2])
    return batch * queries * keys * (query[-1] + value[-1])


def backbone_gflops(backbone: nn.Module, image: torch.Tensor) -> float:
    """Inference GFLOPs of ``backbone`` on one image, counted by mmengine's
    FlopAnalyzer (one multiply-add = one FLOP, the fvcore convention), the
    fused attention kernel included."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        analyzer = FlopAnalyzer(backbone, (image, ))
        analyzer.set_op_handle('aten::scaled_dot_product_attention',
                               sdpa_flop_jit)
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        flops = analyzer.total()
    backbone.train(was_training)
    return flops / 1e9
