"""The Mona adapter against an independent transcription of the official maths.

``OfficialMona`` below is written from the official forward (Leiyi-Hu/mona,
``swin_transformer_mona.py``: ``MonaOp`` and ``Mona``) and its init (the
backbone's trunc-normal Linear init, gamma 1e-6, gammax 1, conv defaults),
step by step and without importing mmpeft, so that it can disagree with it.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import assert_close_to_scale
from mmpeft.adapters import Mona, build_adapter


class OfficialMonaOp(nn.Module):

    def __init__(self, dim):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=5, padding=2, groups=dim)
        self.conv3 = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.projector = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x):
        identity = x
        x = (self.conv1(x) + self.conv2(x) + self.conv3(x)) / 3.0 + identity
        identity = x
        return identity + self.projector(x)


class OfficialMona(nn.Module):

    def __init__(self, in_dim):
        super().__init__()
        self.project1 = nn.Linear(in_dim, 64)
        self.project2 = nn.Linear(64, in_dim)
        self.dropout = nn.Dropout(p=0.1)
        self.adapter_conv = OfficialMonaOp(64)
        self.norm = nn.LayerNorm(in_dim)
        self.gamma = nn.Parameter(torch.ones(in_dim) * 1e-6)
        self.gammax = nn.Parameter(torch.ones(in_dim))
        for linear in (self.project1, self.project2):  # backbone init_weights
            nn.init.trunc_normal_(linear.weight, std=.02)
            nn.init.constant_(linear.bias, 0)

    def forward(self, x, hw_shapes):
        identity = x
        x = self.norm(x) * self.gamma + x * self.gammax
        project1 = self.project1(x)
        b, n, c = project1.shape
        h, w = hw_shapes
        project1 = project1.reshape(b, h, w, c).permute(0, 3, 1, 2)
        project1 = self.adapter_conv(project1)
        project1 = project1.permute(0, 2, 3, 1).reshape(b, n, c)
        return identity + self.project2(self.dropout(F.gelu(project1)))


def randomized(module, seed=0):
    """``module`` with every parameter random (init leaves paths at ~0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return module


def twins(dim, fused, dtype=torch.float32):
    """(official reference, ours) holding the same random weights."""
    ref = randomized(OfficialMona(dim)).to(dtype)
    ours = Mona(dim, fused=fused).to(dtype)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


HW_SHAPES = [(8, 8), (7, 9), (13, 5), (1, 1)]


def test_official_parameter_names_and_count():
    for dim in (96, 128, 512):
        ours, ref = Mona(dim), OfficialMona(dim)
        assert {k: v.shape for k, v in ours.state_dict().items()} == {
            k: v.shape for k, v in ref.state_dict().items()}
        assert sum(p.numel() for p in ours.parameters()) == 133 * dim + 9728


@pytest.mark.parametrize('hw_shape', HW_SHAPES)
def test_literal_form_equals_official(hw_shape):
    ref, ours = twins(32, fused=False)
    x = torch.randn(2, hw_shape[0] * hw_shape[1], 32)
    ref.eval()
    ours.eval()
    assert_close_to_scale(ours(x, hw_shape), ref(x, hw_shape))
    ref.train()  # same dropout mask from the same seed
    ours.train()
    torch.manual_seed(1)
    expected = ref(x, hw_shape)
    torch.manual_seed(1)
    assert_close_to_scale(ours(x, hw_shape), expected)


@pytest.mark.parametrize('hw_shape', HW_SHAPES)
def test_fused_form_equals_official(hw_shape):
    x = torch.randn(2, hw_shape[0] * hw_shape[1], 32)
    ref, ours = twins(32, fused=True)
    ref.eval()
    ours.eval()
    torch.testing.assert_close(ours(x, hw_shape), ref(x, hw_shape),
                               rtol=1e-5, atol=1e-5)
    ref, ours = twins(32, fused=True, dtype=torch.float64)
    ref.eval()
    ours.eval()
    x = x.double()
    torch.testing.assert_close(ours(x, hw_shape), ref(x, hw_shape),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('hw_shape', HW_SHAPES)
def test_fused_gradients_equal_literal_gradients(hw_shape):
    """Same loss, same gradients for the input and every parameter (the
    fused kernels are rebuilt from the 3/5/7 kernels at every call)."""
    _, unfused = twins(24, fused=False, dtype=torch.float64)
    fused = Mona(24, fused=True).double()
    fused.load_state_dict(unfused.state_dict())
    x = torch.randn(2, hw_shape[0] * hw_shape[1], 24, dtype=torch.float64)
    grad_out = torch.randn_like(x)
    grads = []
    for adapter in (unfused, fused):
        adapter.train()
        torch.manual_seed(2)  # same dropout mask
        tokens = x.clone().requires_grad_()
        adapter(tokens, hw_shape).backward(grad_out)
        grads.append({'input': tokens.grad, **{
            name: param.grad for name, param in adapter.named_parameters()}})
    assert grads[0].keys() == grads[1].keys()
    for name, expected in grads[0].items():
        assert expected.abs().sum() > 0, name  # every path carries gradient
        torch.testing.assert_close(grads[1][name], expected, rtol=1e-10,
                                   atol=1e-12, msg=name)


def test_official_init():
    torch.manual_seed(0)
    adapter = randomized(Mona(256))
    adapter.reset_parameters()
    assert torch.equal(adapter.gamma, torch.full((256, ), 1e-6))
    assert torch.equal(adapter.gammax, torch.ones(256))
    assert torch.equal(adapter.norm.weight, torch.ones(256))
    assert torch.equal(adapter.norm.bias, torch.zeros(256))
    for linear in (adapter.project1, adapter.project2):
        assert torch.equal(linear.bias, torch.zeros_like(linear.bias))
        assert abs(linear.weight.std().item() - 0.02) < 0.001
        assert linear.weight.abs().max() <= 2.0  # trunc_normal's bounds
    conv = adapter.adapter_conv
    for layer, fan_in in ((conv.conv1, 9), (conv.conv2, 25), (conv.conv3, 49),
                          (conv.projector, 64)):
        # PyTorch's Conv2d default: uniform(+-1/sqrt(fan_in)), bias too.
        bound = 1 / math.sqrt(fan_in)
        for tensor in (layer.weight, layer.bias):
            assert tensor.abs().max() <= bound
            assert tensor.abs().max() > 0.8 * bound
    # A fresh adapter starts at about the identity map.
    x = torch.randn(1, 49, 256)
    out = Mona(256).eval()(x, (7, 7))
    assert (out - x).abs().max() < 0.5 * x.abs().max()


def test_wrong_hw_shape_is_a_clear_error():
    adapter = Mona(16)
    with pytest.raises(ValueError, match=r'hw_shape \(4, 5\).*\(B, 20, C\)'):
        adapter(torch.randn(2, 16, 16), (4, 5))
    with pytest.raises(ValueError, match='hw_shape must be'):
        adapter(torch.randn(2, 16, 16), (4, 2, 2))
    with pytest.raises(ValueError, match='B, H\\*W, C'):
        adapter(torch.randn(16, 16), (4, 4))


def test_deploy_stores_fused_kernels():
    ref, adapter = twins(32, fused=False)
    x = torch.randn(2, 35, 32)
    ref.eval()
    adapter.eval()
    expected = ref(x, (5, 7))
    adapter.deploy()
    assert {k for k in adapter.state_dict() if 'adapter_conv' in k} == {
        'adapter_conv.dw.weight', 'adapter_conv.dw.bias',
        'adapter_conv.pw.weight', 'adapter_conv.pw.bias'
    }
    torch.testing.assert_close(adapter(x, (5, 7)), expected, rtol=1e-5,
                               atol=1e-5)
    rebuilt = Mona(32, deploy=True).eval()
    rebuilt.load_state_dict(adapter.state_dict(), strict=True)
    assert torch.equal(rebuilt(x, (5, 7)), adapter(x, (5, 7)))


def test_build_adapter_from_config():
    adapter = build_adapter(dict(type='Mona', inner_dim=32, dropout=0.0), 48)
    assert isinstance(adapter, Mona)
    assert adapter.project1.weight.shape == (32, 48)
    assert adapter.adapter_conv.conv3.weight.shape == (32, 1, 7, 7)
    assert adapter.dropout.p == 0.0
