"""The comparison adapters (the Mona paper's bottleneck baselines, Houlsby
adapter, AdaptFormer, LoRand; LoRA on the hosts) compute their official
code's formulas, start as their official inits say, and, where that init is
the identity, leave the stock backbone unchanged.

Each reference is written here from the adapter's parameters (explicit GELU,
branch-by-branch low-rank products, loralib's grouped conv and zero-padding),
not by calling the adapter's own helpers.
"""
import copy
import math

import torch.nn.functional as F

import pytest
import torch
from mmdet.models.backbones import SwinTransformer
from mmengine.registry import MODELS
from mmseg.models.backbones import VisionTransformer

from helpers import assert_close_to_scale
from mmpeft.adapters import (LoRA, AdaptFormer, BottleneckAdapter,
                             HoulsbyAdapter, LoRand, build_adapter)
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


def test_houlsby_counts_and_deploys_unchanged():
    """2Cm + m + C parameters; its deploy form is itself (nothing to fold:
    the GELU sits between the two projections)."""
    adapter = perturbed(HoulsbyAdapter(C, hidden_dim=5))
    assert sum(p.numel() for p in adapter.parameters()) == 2 * C * 5 + 5 + C
    assert adapter.as_affine() is None and adapter.deploy_cfg() == {}
    x = tokens()
    expected = adapter(x)
    assert adapter.deploy() is adapter
    assert torch.equal(adapter(x), expected)


# -------------------------------------------- the Mona paper's bottleneck
def official_adapter(adapter, x, scale):
    """Leiyi-Hu/mona ``Adapter.forward`` (swin_transformer_adapter.py /
    _adaptformer.py): project1, F.gelu, dropout, project2, times the scale
    (AdaptFormer) -- written from the weights, erf GELU by hand."""
    p1, p2 = adapter.project1, adapter.project2
    h = gelu_erf(x @ p1.weight.T + p1.bias)
    h = F.dropout(h, p=adapter.dropout.p, training=adapter.training)
    return (h @ p2.weight.T + p2.bias) * scale


@pytest.mark.parametrize('scale', [1.0, 0.1])
@pytest.mark.parametrize('training', [False, True])
def test_bottleneck_is_the_mona_papers_adapter(scale, training):
    adapter = perturbed(BottleneckAdapter(C, hidden_dim=4, scale=scale,
                                          dropout=0.3)).train(training)
    assert adapter.project1.weight.shape == (4, C)  # official nn.Linear names
    x = tokens()
    torch.manual_seed(5)
    out = adapter.delta(x)
    torch.manual_seed(5)  # the same dropout mask
    expected = official_adapter(adapter, x, scale)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    torch.manual_seed(5)
    torch.testing.assert_close(adapter(x), x + expected, rtol=1e-12,
                               atol=1e-12)
    if training:  # dropout is on: another mask, another output
        assert not torch.allclose(adapter.delta(x), expected)


def test_bottleneck_init_is_the_backbones_linear_init():
    """The official backbones' init_weights: trunc-normal(0.02) weights,
    zero biases -- so the branch is NOT zero at init."""
    torch.manual_seed(0)
    adapter = BottleneckAdapter(256, hidden_dim=64)
    for linear in (adapter.project1, adapter.project2):
        assert 0.018 < linear.weight.std() < 0.022
        assert not linear.bias.any()
    assert sum(p.numel() for p in adapter.parameters()) == 2 * 256 * 64 + \
        64 + 256
    assert adapter.eval().delta(torch.randn(2, 7, 256)).abs().max() > 1e-3


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
def colin_lorand(adapter, x):
    """DongshuoYin/CoLin ``Lorand.forward`` with ``Lorand_Multi`` written
    branch by branch, never forming a weight: x A_i g_i B_i summed, each
    projection with its own kernels g_i, erf GELU between."""
    def project(linear, h):
        p = linear.param_dict
        return sum(h @ p[f'A{i}'] @ p[f'g{i}'] @ p[f'B{i}']
                   for i in range(linear.num_branch)) + linear.bias

    return x + project(adapter.project2,
                       gelu_erf(project(adapter.project1, x)))


def test_lorand_is_the_authors_code():
    adapter = perturbed(LoRand(C, factor=2, num_branch=3, kernel_dim=2))
    x = tokens()
    torch.testing.assert_close(adapter(x), colin_lorand(adapter, x), rtol=0,
                               atol=1e-10)


def test_lorand_has_a_kernel_per_projection_and_the_official_count():
    """Each projection owns its kernels: changing project1's leaves
    project2 alone. Count: branches (beta (in + out) + beta^2) + out per
    projection, m = C / factor."""
    alpha, beta, factor = 3, 2, 3
    m = C // factor
    adapter = perturbed(LoRand(C, factor=factor, num_branch=alpha,
                               kernel_dim=beta))
    assert adapter.project1.param_dict['A0'].shape == (C, beta)
    assert adapter.project1.param_dict['B0'].shape == (beta, m)
    assert sum(p.numel() for p in adapter.parameters()) == \
        2 * alpha * (beta * (C + m) + beta ** 2) + m + C
    up = adapter.project2.weight().clone()
    down = adapter.project1.weight().clone()
    with torch.no_grad():
        adapter.project1.param_dict['g0'].mul_(2)
    assert torch.equal(adapter.project2.weight(), up)
    assert not torch.allclose(adapter.project1.weight(), down)


def test_lorand_init_is_the_official_kaiming_and_not_the_identity():
    torch.manual_seed(0)
    adapter = LoRand(64, factor=4, num_branch=2, kernel_dim=8)
    for proj, fan_in in ((adapter.project1, 64), (adapter.project2, 16)):
        for name, param in proj.param_dict.items():
            bound = 1 / math.sqrt(param.shape[1])  # kaiming, a = sqrt(5)
            assert 0.8 * bound < param.abs().max() <= bound, name
        assert 0.8 / math.sqrt(fan_in) < proj.bias.abs().max() <= \
            1 / math.sqrt(fan_in)
    assert adapter.delta(torch.randn(1, 3, 64)).abs().max() > 0


def test_lorand_with_a_zero_up_projection_is_the_identity():
    adapter = perturbed(LoRand(C, factor=2))
    with torch.no_grad():
        for i in range(adapter.project2.num_branch):
            adapter.project2.param_dict[f'B{i}'].zero_()
        adapter.project2.bias.zero_()
    x = tokens()
    assert torch.equal(adapter(x), x)


def test_registered_by_name():
    for name, cls in [('HoulsbyAdapter', HoulsbyAdapter),
                      ('AdaptFormer', AdaptFormer), ('LoRand', LoRand),
                      ('BottleneckAdapter', BottleneckAdapter)]:
        assert type(build_adapter(dict(type=name), C)) is cls


# ------------------------------------------- methods on the hosts vs stock
SWIN = dict(pretrain_img_size=32, embed_dims=16, depths=(2, 2),
            num_heads=(1, 2), window_size=4, strides=(4, 2),
            out_indices=(0, 1), drop_path_rate=0.1)
VIT = dict(img_size=(32, 32), patch_size=8, embed_dims=16, num_layers=2,
           num_heads=2, mlp_ratio=2, out_indices=(0, 1), drop_path_rate=0.1)
HOSTS = {'swin': (SwinTransformer, SWIN), 'vit': (VisionTransformer, VIT)}
COMPARISON = ('adapter', 'adaptformer', 'lora', 'lorand', 'adapter_orig',
              'adaptformer_orig', 'lora_orig')
# How each starts: exactly the stock backbone (a zero up / B), within the
# 1e-3 init of adapter-bert, or not at all (the official inits of the Mona
# paper's bottlenecks, trunc-normal 0.02, and of LoRand).
STARTS_AT_STOCK = {'adaptformer_orig': 0, 'lora': 0, 'lora_orig': 0,
                   'adapter_orig': 1e-3}


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
            elif isinstance(adapter, BottleneckAdapter):
                adapter.project2.weight.zero_(), adapter.project2.bias.zero_()
            elif isinstance(adapter, LoRand):
                for i in range(adapter.project2.num_branch):
                    adapter.project2.param_dict[f'B{i}'].zero_()
                adapter.project2.bias.zero_()


@pytest.mark.parametrize('host', sorted(HOSTS))
@pytest.mark.parametrize('method_name', COMPARISON)
def test_method_at_its_identity_is_the_stock_backbone(method_name, host):
    """Each starts as its official init says (see STARTS_AT_STOCK); with
    its last layer zeroed every one is exactly the stock backbone."""
    model, stock = fresh(method_name, host)
    expected = outputs(stock)
    if method_name in STARTS_AT_STOCK:  # exact up to the GEMM path
        for out, ref in zip(outputs(model), expected):
            torch.testing.assert_close(out, ref, rtol=0, atol=max(
                STARTS_AT_STOCK[method_name], 1e-6 * ref.abs().max()))
    else:
        assert any(not torch.allclose(o, r, atol=1e-3)
                   for o, r in zip(outputs(model), expected))
    zero_last_layer(model)
    for out, ref in zip(outputs(model), expected):
        assert_close_to_scale(out, ref)


@pytest.mark.parametrize('host', sorted(HOSTS))
@pytest.mark.parametrize('method_name', ['adaptformer', 'adaptformer_orig'])
def test_adaptformer_reads_the_ffn_input_before_its_norm(method_name, host):
    """Both official blocks: ``x + drop_path(mlp(norm2(x))) + s *
    branch(x)``, the branch on the un-normed FFN input. Checked by hooking
    the FFN norm: the branch sees its input, not its output."""
    model, _ = fresh(method_name, host)
    block = next(model.blocks())
    norm = block.norm2 if host == 'swin' else block.ln2
    seen = {}
    norm.register_forward_hook(
        lambda m, args, out: seen.update(norm_in=args[0], norm_out=out))
    adapter = next(a for _, a in model.named_adapters())
    first = getattr(adapter, 'project1', None) or adapter.down_proj
    first.register_forward_pre_hook(
        lambda m, args: seen.update(branch_in=args[0]))
    outputs(model)
    assert torch.equal(seen['branch_in'], seen['norm_in'])
    assert not torch.equal(seen['branch_in'], seen['norm_out'])


def official_lorand_block(stock_block, lorand1, lorand2, x, hw):
    """CoLin ``SwinBlock.forward`` of swin_lorand.py: the attention with its
    own drop-path (``ShiftWindowMSA.drop``), then ``x = lorand1(x) +
    identity``; the FFN built with add_identity=False (its output is
    drop_path(mlp(.))), then ``x = lorand2(ffn(x)) + identity``. mmseg's ViT
    layer has the same structure (its attention's dropout_layer is a
    Dropout(0), its FFN's a DropPath)."""
    if hw is None:  # ViT layer: attention and FFN add `identity` themselves
        attn = lambda h: stock_block.attn(h, identity=torch.zeros_like(h))  # noqa
    else:
        attn = lambda h: stock_block.attn(h, hw)  # noqa: E731
    x = lorand1(attn(stock_block.norm1(x))) + x
    h = stock_block.norm2(x)
    return lorand2(stock_block.ffn(h, identity=torch.zeros_like(h))) + x


@pytest.mark.parametrize('host', sorted(HOSTS))
def test_lorand_sits_after_drop_path_in_training(host):
    """In training with drop-path, a dropped sample gets lorand(0) added
    (not 0, as ``series`` would): the official placement, checked against
    the official block forward with the same random masks."""
    stock_cls, args = HOSTS[host]
    args = dict(args, drop_path_rate=0.6)
    torch.manual_seed(0)
    stock = stock_cls(**args)
    model = MODELS.build(dict(args, **copy.deepcopy(
        METHODS[f'lorand_{host}'].backbone)))
    model.load_state_dict(stock.state_dict(), strict=False)
    if host == 'swin':
        block, stock_block = model.stages[1].blocks[1], \
            stock.stages[1].blocks[1]
        x, hw = torch.randn(8, 4, 32), (2, 2)
    else:
        block, stock_block = model.layers[1], stock.layers[1]
        x, hw = torch.randn(8, 17, 16), None
        block.hw_shape = (4, 4)
    block.train(), stock_block.train()
    with torch.no_grad():
        torch.manual_seed(3)
        out = block(x) if hw is None else block(x, hw)
        torch.manual_seed(3)
        ref = official_lorand_block(stock_block, block.attn_after_drop_path,
                                    block.ffn_after_drop_path, x, hw)
        torch.manual_seed(3)
        # mmseg's ViT attention has no drop-path (its dropout_layer is a
        # Dropout(0)): move the FFN's adapter, drop-path on both hosts.
        block.token_slots['ffn']['series'] = 'ffn_after_drop_path'
        del block.token_slots['ffn']['after_drop_path']
        as_series = block(x) if hw is None else block(x, hw)
    torch.testing.assert_close(out, ref, rtol=1e-5,
                               atol=1e-6 * ref.abs().max())
    assert not torch.allclose(out, as_series)  # the placement matters


# -------------------------------------------------------------------- LoRA
def merged_linear(x, weight, bias, lora_A, lora_B, r, lora_alpha,
                  enable_lora):
    """loralib ``MergedLinear.forward`` (Leiyi-Hu/mona lora_layers.py) in
    train mode without dropout: A x, then B as a grouped 1x1 conv1d (one
    group per enabled slice), zero-padded into the enabled output rows."""
    out_features = weight.shape[0]
    result = F.linear(x, weight, bias)
    after_a = F.linear(x, lora_A)
    after_b = F.conv1d(after_a.transpose(-2, -1), lora_B.unsqueeze(-1),
                       groups=sum(enable_lora)).transpose(-2, -1)
    lora_ind = torch.zeros(len(enable_lora), out_features // len(
        enable_lora), dtype=torch.bool)
    lora_ind[enable_lora, :] = True
    lora_ind = lora_ind.view(-1)
    padded = after_b.new_zeros(*after_b.shape[:-1], out_features)
    padded = padded.view(-1, out_features)
    padded[:, lora_ind] = after_b.reshape(-1, int(lora_ind.sum()))
    return result + padded.view(*after_b.shape[:-1], out_features) * (
        lora_alpha / r)


def merged_linear_delta(lora_A, lora_B, r, lora_alpha, enable_lora,
                        out_features):
    """What loralib's ``MergedLinear.train(False)`` adds into the weight."""
    delta = F.conv1d(lora_A.unsqueeze(0), lora_B.unsqueeze(-1),
                     groups=sum(enable_lora)).squeeze(0)
    lora_ind = torch.zeros(len(enable_lora), out_features // len(
        enable_lora), dtype=torch.bool)
    lora_ind[enable_lora, :] = True
    full = delta.new_zeros(out_features, lora_A.shape[1])
    full[lora_ind.view(-1), :] = delta * (lora_alpha / r)
    return full


QV = [True, False, True]


def qv_lora(r=4, alpha=1, c=C):
    """The Mona paper's LoRA on a fused (3c, c) qkv, moved off its init."""
    lora = LoRA(c, 3 * c, r=r, alpha=alpha, enable_lora=QV)
    return perturbed(lora)


def test_lora_on_q_and_v_is_loralib_merged_linear():
    lora = qv_lora()
    assert lora.lora_A.shape == (2 * 4, C)  # loralib's shapes: one state
    assert lora.lora_B.shape == (2 * C, 4)  # dict fits both
    torch.manual_seed(0)
    weight = torch.randn(3 * C, C, dtype=torch.float64)
    bias = torch.randn(3 * C, dtype=torch.float64)
    x = tokens()
    ours = F.linear(x, weight, bias) + lora(x)
    ref = merged_linear(x, weight, bias, lora.lora_A, lora.lora_B, r=4,
                        lora_alpha=1, enable_lora=QV)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    # k's rows get nothing, q's and v's each their own pair
    update = lora(x)
    assert not update[..., C:2 * C].any()
    assert update[..., :C].any() and update[..., 2 * C:].any()
    with torch.no_grad():
        lora.lora_B[C:].zero_()  # v's B: v's rows fall to zero, q's stay
    assert not lora(x)[..., 2 * C:].any() and lora(x)[..., :C].any()


def test_lora_delta_weight_is_loralibs_merge():
    lora = qv_lora(r=3, alpha=2)
    x = tokens()
    ref = merged_linear_delta(lora.lora_A, lora.lora_B, r=3, lora_alpha=2,
                              enable_lora=QV, out_features=3 * C)
    torch.testing.assert_close(lora.delta_weight(), ref, rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(x @ lora.delta_weight().T, lora.eval()(x),
                               rtol=1e-12, atol=1e-12)


def test_lora_scale_and_init_are_loralibs():
    torch.manual_seed(0)
    lora = LoRA(256, 768, r=64, alpha=1, enable_lora=QV)
    assert lora.scaling == 1 / 64
    bound = 1 / math.sqrt(256)  # kaiming-uniform, a = sqrt(5)
    assert 0.9 * bound < lora.lora_A.abs().max() <= bound
    assert not lora.lora_B.any()
    assert sum(p.numel() for p in lora.parameters()) == 2 * 64 * (256 + 256)
    assert LoRA(256, 768, r=64).scaling == 1  # alpha = r by default


@pytest.mark.parametrize('host', sorted(HOSTS))
def test_lora_on_the_host_is_the_stock_block_with_loralibs_merged_qkv(host):
    """Every block of the Mona paper's LoRA equals the stock block whose qkv
    weight got loralib's merge (MergedLinear in eval mode)."""
    model, stock = fresh('lora', host)
    torch.manual_seed(4)
    with torch.no_grad():
        for _, lora in model.named_adapters():
            lora.lora_B.normal_(std=0.5)
        for block, stock_block in zip(model.blocks(), stock.layers if
                                      host == 'vit' else (
                                          b for s in stock.stages
                                          for b in s.blocks)):
            owner = (block.attn.w_msa.qkv if host == 'swin'
                     else block.attn.attn)
            name = 'weight' if host == 'swin' else 'in_proj_weight'
            lora = getattr(owner, f'{name}_adapter')
            stock_weight = (stock_block.attn.w_msa.qkv.weight
                            if host == 'swin' else
                            stock_block.attn.attn.in_proj_weight)
            stock_weight.add_(merged_linear_delta(
                lora.lora_A, lora.lora_B, r=64, lora_alpha=1,
                enable_lora=QV, out_features=stock_weight.shape[0]))
    for out, ref in zip(outputs(model), outputs(stock)):
        torch.testing.assert_close(out, ref, rtol=1e-5,
                                   atol=1e-5 * ref.abs().max())
