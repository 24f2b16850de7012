"""RepAdapter on its own: the official maths, init and layout, and its affine
form (what merging into the next linear layer relies on)."""
import math

import pytest
import torch
from torch import nn

from mmpeft.adapters import RepAdapter, build_adapter
from mmpeft.adapters.repadapter import fold_affine_into_linear


def random_adapter(in_dim=24, hidden_dim=8, groups=2, scale=1.0, seed=0):
    """An adapter with every parameter random and non-zero (float64)."""
    torch.manual_seed(seed)
    adapter = RepAdapter(in_dim, hidden_dim, groups, scale).double()
    for param in adapter.parameters():
        nn.init.normal_(param, std=0.5)
    return adapter


def official_forward(adapter, x):
    """The official code's form: Conv1d over (B, C, N), grouped B."""
    h = adapter.conv_A(x.transpose(1, 2))
    h = adapter.conv_B(adapter.dropout(h))
    return (h * adapter.scale + x.transpose(1, 2)).transpose(1, 2)


def test_official_layout_and_init():
    adapter = RepAdapter(768)
    assert {
        k: tuple(v.shape)
        for k, v in adapter.state_dict().items()
    } == {
        'conv_A.weight': (8, 768, 1),
        'conv_A.bias': (8, ),
        'conv_B.weight': (768, 4, 1),  # groups=2: r / 2 inputs per output
        'conv_B.bias': (768, ),
    }
    assert sum(p.numel() for p in adapter.parameters()) == 9992
    assert adapter.dropout.p == 0.1 and adapter.scale == 1.0
    bound = math.sqrt(6 / (768 + 8))  # xavier-uniform of a (8, 768) matrix
    weight_a = adapter.conv_A.weight
    assert weight_a.abs().max() <= bound and weight_a.std() > bound / 3
    for param in (adapter.conv_A.bias, adapter.conv_B.weight,
                  adapter.conv_B.bias):
        assert not param.any()


def test_zero_init_is_identity_in_train_mode_too():
    adapter = RepAdapter(32, scale=3.0).train()
    x = torch.randn(2, 5, 32)
    assert torch.equal(adapter(x, (1, 5)), x)


@pytest.mark.parametrize('groups,scale', [(1, 1.0), (2, 0.1), (4, 5.0)])
def test_forward_matches_official_grouped_conv(groups, scale):
    adapter = random_adapter(groups=groups, scale=scale).eval()
    x = torch.randn(3, 7, 24, dtype=torch.float64)
    torch.testing.assert_close(adapter(x),
                               official_forward(adapter, x),
                               rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize('groups,scale', [(1, 1.0), (2, 0.1), (4, 5.0)])
def test_as_affine_is_exact(groups, scale):
    adapter = random_adapter(groups=groups, scale=scale).eval()
    x = torch.randn(3, 7, 24, dtype=torch.float64)
    matrix, offset = adapter.as_affine()
    assert matrix.shape == (24, 24) and offset.shape == (24, )
    torch.testing.assert_close(adapter(x),
                               x @ matrix.T + offset,
                               rtol=1e-12,
                               atol=1e-12)
    # the up-projection is block-diagonal: group g only reaches its outputs
    up = adapter.dense_up_weight()
    rows, cols = 24 // groups, 8 // groups
    for g in range(groups):
        block = up[g * rows:(g + 1) * rows]
        assert not block[:, :g * cols].any()
        assert not block[:, (g + 1) * cols:].any()


def test_dropout_sits_between_a_and_b():
    adapter = random_adapter().train()
    seen = []
    adapter.dropout.register_forward_hook(
        lambda module, inputs, output: seen.append(inputs[0].shape))
    x = torch.randn(4, 50, 24, dtype=torch.float64)
    out = adapter(x)
    assert seen == [(4, 50, 8)]  # it drops hidden units, width r
    assert not torch.allclose(out, adapter.eval()(x))


def test_fold_into_linear_equals_adapter_then_linear():
    adapter = random_adapter(scale=2.0).eval().float()
    linear = nn.Linear(24, 36)
    x = torch.randn(2, 9, 24)
    expected = linear(adapter(x))
    fold_affine_into_linear(linear.weight, linear.bias, *adapter.as_affine())
    out = linear(x)
    assert ((out - expected).abs().max() / expected.abs().max()) < 1e-6


def test_build_and_bad_groups():
    adapter = build_adapter(dict(type='RepAdapter', scale=0.5), 64)
    assert isinstance(adapter, RepAdapter) and adapter.scale == 0.5
    with pytest.raises(ValueError, match='groups=3'):
        RepAdapter(64, hidden_dim=8, groups=3)
