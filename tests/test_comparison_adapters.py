"""The comparison adapters (Houlsby adapter, AdaptFormer, LoRand; LoRA on the
hosts) compute their papers' formulas, start as their official inits say,
and, where that init is the identity, leave the stock backbone unchanged.

Each reference is written here from the adapter's parameters (explicit GELU,
branch-by-branch low-rank products), not by calling the adapter's own
helpers.
"""
import copy
import math

import pytest
import torch
from mmdet.models.backbones import SwinTransformer
from mmengine.registry import MODELS
from mmseg.models.backbones import VisionTransformer

from helpers import assert_close_to_scale
from mmpeft.adapters import AdaptFormer, HoulsbyAdapter, LoRand, build_adapter
from mmpeft.methods import METHODS

C = 12


def tokens(seed=0, n=5):
    torch.manual_seed(seed)
    return torch.randn(2, n, C, dtype=torch.float64)


def perturbed(adapter, seed=1, scale=0.3):
    """``adapter`` in float64 with every parameter moved off its init."""
    adapter = adapter.double().eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in adapter.parameters():
            param.add_(torch.randn_like(param) * scale)
    return adapter


def gelu_tanh(h):
    return 0.5 * h * (1 + torch.tanh(
        math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))


def gelu_erf(h):
    return 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))


# ----------------------------------------------------------------- Houlsby
def test_houlsby_is_the_adapter_bert_bottleneck():
    adapter = perturbed(HoulsbyAdapter(C, hidden_dim=4))
    x = tokens()
    w1, b1, w2, b2 = (adapter.weights1, adapter.biases1, adapter.weights2,
                      adapter.biases2)
    assert w1.shape == (C, 4) and w2.shape == (4, C)  # adapter-bert layout
    expected = x + torch.einsum('bnh,hc->bnc',
                                gelu_tanh(torch.einsum(
                                    'bnc,ch->bnh', x, w1) + b1), w2) + b2
    torch.testing.assert_close(adapter(x), expected, rtol=0, atol=1e-12)


def test_houlsby_starts_near_the_identity():
    torch.manual_seed(0)
    adapter = HoulsbyAdapter(256, hidden_dim=64)
    for weight in (adapter.weights1, adapter.weights2):
        assert weight.abs().max() <= 2e-3  # truncated at 2 stddev
        assert 0.7e-3 < weight.std() < 1e-3  # truncation shrinks stddev 1e-3
    assert not adapter.biases1.any() and not adapter.biases2.any()
    x = torch.randn(2, 7, 256)
    delta = adapter(x) - x
    assert 0 < delta.abs().max() < 1e-4 * x.abs().max()


# ------------------------------------------------------------- AdaptFormer
@pytest.mark.parametrize('layernorm', ['none', 'in'])
def test_adaptformer_is_the_official_scaled_branch(layernorm):
    adapter = perturbed(AdaptFormer(C, hidden_dim=4, scale=0.1,
                                    layernorm=layernorm, dropout=0.5))
    x = tokens()
    h = x
    if layernorm == 'in':
        norm = adapter.adapter_layer_norm_before
        mean = h.mean(-1, keepdim=True)
        var = ((h - mean) ** 2).mean(-1, keepdim=True)
        h = (h - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
    down, up = adapter.down_proj, adapter.up_proj
    hidden = torch.clamp(h @ down.weight.T + down.bias, min=0)
    expected = 0.1 * (hidden @ up.weight.T + up.bias)
    torch.testing.assert_close(adapter.delta(x), expected, rtol=0,
                               atol=1e-12)  # eval: dropout off
    torch.testing.assert_close(adapter(x), x + expected, rtol=0, atol=1e-12)


def test_adaptformer_lora_init_starts_at_zero():
    torch.manual_seed(0)
    adapter = AdaptFormer(256, hidden_dim=64)
    bound = 1 / math.sqrt(256)  # kaiming-uniform, a = sqrt(5)
    assert 0.9 * bound < adapter.down_proj.weight.abs().max() <= bound
    assert not adapter.up_proj.weight.any()
    assert not adapter.down_proj.bias.any() and not adapter.up_proj.bias.any()
    assert not adapter.delta(torch.randn(2, 7, 256)).any()


def test_adaptformer_learnable_scalar_trains_and_bad_options_say_so():
    adapter = AdaptFormer(C, scale='learnable_scalar')
    assert isinstance(adapter.scale, torch.nn.Parameter)
    assert adapter.scale.item() == 1.0
    with pytest.raises(ValueError, match="'none' or 'in'"):
        AdaptFormer(C, layernorm='out')
    with pytest.raises(ValueError, match='learnable_scalar'):
        AdaptFormer(C, scale='0.1x')


# ------------------------------------------------------------------ LoRand
def test_lorand_is_a_bottleneck_of_shared_kernel_low_rank_branches():
    adapter = perturbed(LoRand(C, hidden_dim=6, num_branch=3, kernel_dim=2))
    p = adapter.param_dict
    x = tokens()
    # Branch by branch, never forming a weight: x P_i K_i Q_i.
    h = sum(x @ p[f'DP{i}'] @ p[f'K{i}'] @ p[f'DQ{i}'] for i in range(3))
    g = gelu_erf(h + adapter.bias_D)
    out = sum(g @ p[f'UP{i}'] @ p[f'K{i}'] @ p[f'UQ{i}'] for i in range(3))
    torch.testing.assert_close(adapter(x), x + out + adapter.bias_U, rtol=0,
                               atol=1e-10)


def test_lorand_shares_one_kernel_per_branch():
    """Each branch has one K, used by both projections: changing it changes
    both, and the parameter count is alpha (2 beta (C + m) + beta^2) + m + C.
    """
    alpha, beta, m = 2, 3, 5
    adapter = perturbed(LoRand(C, hidden_dim=m, num_branch=alpha,
                               kernel_dim=beta))
    assert sum(p.numel() for p in adapter.parameters()) == \
        alpha * (2 * beta * (C + m) + beta ** 2) + m + C
    down, up = adapter.down_weight().clone(), adapter.up_weight().clone()
    with torch.no_grad():
        adapter.param_dict['K0'].mul_(2)
    assert not torch.allclose(adapter.down_weight(), down)
    assert not torch.allclose(adapter.up_weight(), up)


def test_lorand_init_is_kaiming_and_not_the_identity():
    torch.manual_seed(0)
    adapter = LoRand(64, hidden_dim=16, num_branch=2, kernel_dim=8)
    for name, param in adapter.param_dict.items():
        bound = 1 / math.sqrt(param.shape[1])  # kaiming-uniform, a = sqrt(5)
        assert param.abs().max() <= bound, name
    assert adapter.bias_D.abs().max() <= 1 / math.sqrt(64)
    assert adapter.bias_U.abs().max() <= 1 / math.sqrt(16)
    assert adapter.delta(torch.randn(1, 3, 64)).abs().max() > 0


def test_lorand_with_a_zero_up_projection_is_the_identity():
    adapter = perturbed(LoRand(C, hidden_dim=6))
    with torch.no_grad():
        for i in range(adapter.num_branch):
            adapter.param_dict[f'UQ{i}'].zero_()
        adapter.bias_U.zero_()
    x = tokens()
    assert torch.equal(adapter(x), x)


def test_registered_by_name():
    for name, cls in [('HoulsbyAdapter', HoulsbyAdapter),
                      ('AdaptFormer', AdaptFormer), ('LoRand', LoRand)]:
        assert type(build_adapter(dict(type=name), C)) is cls


# ------------------------------------------- methods on the hosts vs stock
SWIN = dict(pretrain_img_size=32, embed_dims=16, depths=(2, 2),
            num_heads=(1, 2), window_size=4, strides=(4, 2),
            out_indices=(0, 1), drop_path_rate=0.1)
VIT = dict(img_size=(32, 32), patch_size=8, embed_dims=16, num_layers=2,
           num_heads=2, mlp_ratio=2, out_indices=(0, 1), drop_path_rate=0.1)
HOSTS = {'swin': (SwinTransformer, SWIN), 'vit': (VisionTransformer, VIT)}
COMPARISON = ('adapter', 'adaptformer', 'lora', 'lorand')


def fresh(method_name, host):
    """(method backbone at its init, stock backbone), same frozen weights."""
    stock_cls, args = HOSTS[host]
    torch.manual_seed(0)
    stock = stock_cls(**args)
    method = METHODS[f'{method_name}_{host}']
    model = MODELS.build(dict(args, **copy.deepcopy(method.backbone)))
    model.load_state_dict(stock.state_dict(), strict=False)
    stock.eval(), model.eval()
    return model, stock


def outputs(model):
    torch.manual_seed(2)
    with torch.no_grad():
        return model(torch.randn(2, 3, 32, 32))


def zero_last_layer(model):
    """Zero what each comparison adapter adds last (its identity form)."""
    with torch.no_grad():
        for _, adapter in model.named_adapters():
            if isinstance(adapter, HoulsbyAdapter):
                adapter.weights2.zero_(), adapter.biases2.zero_()
            elif isinstance(adapter, LoRand):
                for i in range(adapter.num_branch):
                    adapter.param_dict[f'UQ{i}'].zero_()
                adapter.bias_U.zero_()


@pytest.mark.parametrize('host', sorted(HOSTS))
@pytest.mark.parametrize('method_name', COMPARISON)
def test_method_at_its_identity_is_the_stock_backbone(method_name, host):
    """AdaptFormer and LoRA start exactly at the stock backbone (zero up /
    B); the Houlsby adapter within its 1e-3 init; the Houlsby adapter and
    LoRand with their last layer zeroed exactly."""
    model, stock = fresh(method_name, host)
    expected = outputs(stock)
    if method_name == 'adapter':
        for out, ref in zip(outputs(model), expected):
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-3)
    if method_name == 'lorand':  # its official init is not the identity
        assert any(not torch.allclose(o, r, atol=1e-3)
                   for o, r in zip(outputs(model), expected))
    zero_last_layer(model)
    for out, ref in zip(outputs(model), expected):
        assert_close_to_scale(out, ref)


@pytest.mark.parametrize('host', sorted(HOSTS))
def test_adaptformer_reads_the_ffn_input_before_its_norm(host):
    """The official block: ``x + mlp(norm2(x)) + s * branch(x)``, the branch
    on the un-normed FFN input. Checked by hooking the FFN norm: the branch
    sees its input, not its output."""
    model, _ = fresh('adaptformer', host)
    block = next(model.blocks())
    norm = block.norm2 if host == 'swin' else block.ln2
    seen = {}
    norm.register_forward_hook(
        lambda m, args, out: seen.update(norm_in=args[0], norm_out=out))
    adapter = next(a for _, a in model.named_adapters())
    adapter.down_proj.register_forward_pre_hook(
        lambda m, args: seen.update(branch_in=args[0]))
    outputs(model)
    assert torch.equal(seen['branch_in'], seen['norm_in'])
    assert not torch.equal(seen['branch_in'], seen['norm_out'])
