"""Mixed precision: under CPU autocast (bf16, and fp16 where this torch
supports it) every backbone stays within a precision-sized tolerance of its
fp32 output, merged (deploy) models too, and an autocast training step gives
finite gradients to the adapters only."""
import copy

import pytest
import torch
from mmengine.registry import MODELS

from mmpeft import merge_adapters
from test_reliability_support import TINY_SWIN, TINY_VIT

BACKBONES = dict(
    mona=dict(type='MonaSwinTransformer', **TINY_SWIN),
    mimi=dict(type='MiMiSwin', **TINY_SWIN),
    repadapter=dict(type='RepAdapterViT', **TINY_VIT))
# Relative Frobenius error of each output map vs fp32. Measured on these
# models: bf16 <= 1.2e-2 (8-bit mantissa), fp16 <= 1.5e-3 (11-bit).
TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 4e-3}


def cpu_autocast_supports(dtype):
    try:
        with torch.autocast('cpu', dtype=dtype):
            torch.nn.functional.linear(torch.ones(2, 2), torch.ones(2, 2))
        return True
    except RuntimeError:
        return False


DTYPES = [
    pytest.param(
        dtype,
        marks=pytest.mark.skipif(
            not cpu_autocast_supports(dtype),
            reason=f'CPU autocast to {dtype} unsupported by this torch'))
    for dtype in (torch.bfloat16, torch.float16)
]


def trained_backbone(method):
    """Adapters moved off their init (Mona's and RepAdapter's near-identity
    init would hide their own rounding); MiMi also half pruned."""
    torch.manual_seed(0)
    model = MODELS.build(BACKBONES[method])
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
        if method == 'mimi':
            for _, adapter in model.named_adapters():
                mask = torch.ones(adapter.hidden_dim)
                mask[::2] = 0
                adapter.set_mask(mask)
    model.eval()
    return model


def relative_errors(outputs, reference):
    assert len(outputs) == len(reference)
    errors = []
    for out, ref in zip(outputs, reference):
        assert out.shape == ref.shape and out.isfinite().all()
        errors.append(((out.float() - ref).norm() / ref.norm()).item())
    return errors


def forward(model, x, dtype=None):
    with torch.no_grad(), torch.autocast(
            'cpu', dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        return model(x)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('method', list(BACKBONES))
def test_autocast_forward_close_to_fp32(method, dtype):
    model = trained_backbone(method)
    x = torch.randn(2, 3, 64, 64)
    reference = forward(model, x)
    errors = relative_errors(forward(model, x, dtype), reference)
    assert max(errors) < TOLERANCE[dtype], errors
    assert min(errors) > 0  # autocast did run in lower precision


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('method', list(BACKBONES))
def test_merged_model_under_autocast(method, dtype):
    """RepAdapter folded into qkv / fc1, Mona's fused kernels stored, MiMi
    shrunk: exact in fp32, and no worse than unmerged under autocast."""
    model = trained_backbone(method)
    merged = merge_adapters(copy.deepcopy(model))
    x = torch.randn(2, 3, 64, 64)
    reference = forward(model, x)
    assert max(relative_errors(forward(merged, x), reference)) < 1e-5

    unmerged_errors = relative_errors(forward(model, x, dtype), reference)
    merged_errors = relative_errors(forward(merged, x, dtype), reference)
    assert max(merged_errors) < TOLERANCE[dtype], merged_errors
    assert max(merged_errors) <= 1.5 * max(unmerged_errors) + 1e-3
    if method == 'repadapter':
        assert not list(merged.named_adapters())  # a stock ViT now


@pytest.mark.parametrize('method', list(BACKBONES))
def test_autocast_training_step_reaches_adapters_only(method):
    model = trained_backbone(method)
    model.train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = sum(o.float().pow(2).mean() for o in model(
            torch.randn(2, 3, 64, 64)))
    loss.backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.isfinite().all(), name
        else:
            assert param.grad is None, name
