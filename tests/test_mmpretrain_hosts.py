"""mmpretrain's transformers as hosts (mmpeft/models/pretrain_vit.py): every
placement of every block type computes the maths it names.

Block types: a DINOv2 layer with layer scale and a SwiGLU FFN (ViT-g), one
with layer scale and an MLP (ViT-S/B/L), an EVA-02 layer (RoPE, SwiGLU with
sub-LN) and SAM's windowed and global layers. Each reference is written from
a copy of the stock block (its own modules, the layer scale taken out to
apply it where the placement says) and the adapter's formula, not by running
mmpeft's block. Also: identity-initialised adapters give the stock backbone,
merged == unmerged and a fully folded model strict-loads into the stock
backbone, Mona leaves the class and register tokens alone, registers follow
DINOv2, and every method of the table and every freeze policy run on every
host.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from mmpretrain.models.backbones import VisionTransformer, ViTEVA02, ViTSAM
from mmpretrain.models.utils import resize_pos_embed
from torch import nn

from mmpeft.engine.peft_freeze_hook import FreezePolicy, policy_flags
from mmpeft.methods import METHODS, POLICIES
from mmpeft.models import TOKEN_PLACEMENTS, PretrainedMismatchError

TINY = dict(embed_dims=16, num_layers=2, num_heads=2)
DINOV2 = dict(arch=dict(TINY, feedforward_channels=32), img_size=28,
              patch_size=7, layer_scale_init_value=0.5, out_type='featmap',
              out_indices=(0, 1), drop_path_rate=0.1)
DINOV2_G = dict(DINOV2, layer_cfgs=dict(ffn_type='swiglu_fused'))
EVA02 = dict(arch=dict(TINY, feedforward_channels=24), img_size=28,
             patch_size=7, sub_ln=True, out_type='featmap',
             out_indices=(0, 1), drop_path_rate=0.1)
SAM = dict(arch=dict(TINY, feedforward_channels=32, global_attn_indexes=[1]),
           img_size=32, patch_size=8, window_size=2, out_channels=8,
           out_indices=(0, 1), drop_path_rate=0.1)
HOSTS = {  # host kind: (mmpeft type, stock class, arguments, image size)
    'dinov2_swiglu': ('AdapterPretrainViT', VisionTransformer, DINOV2_G, 28),
    'dinov2_mlp': ('AdapterPretrainViT', VisionTransformer, DINOV2, 28),
    'eva02_rope': ('AdapterViTEVA02', ViTEVA02, EVA02, 28),
    'sam': ('AdapterViTSAM', ViTSAM, SAM, 32),
}
# Block kind: (host kind, layer index, token map (H, W) fed to the layer).
BLOCKS = {
    'dinov2_swiglu': ('dinov2_swiglu', 1, (4, 4)),
    'dinov2_mlp': ('dinov2_mlp', 1, (4, 4)),
    'eva02_rope': ('eva02_rope', 1, (4, 4)),
    'sam_windowed': ('sam', 0, (5, 5)),  # window 2: padded to 6x6
    'sam_global': ('sam', 1, (4, 4)),
}
# The stock path of each linear weight (independent of the hosts' tables).
WEIGHTS = {
    'dinov2_swiglu': dict(qkv='attn.qkv', proj='attn.proj', w12='ffn.w12',
                          w3='ffn.w3'),
    'dinov2_mlp': dict(qkv='attn.qkv', proj='attn.proj',
                       fc1='ffn.layers.0.0', fc2='ffn.layers.1'),
    'eva02_rope': dict(qkv='attn.qkv', proj='attn.proj', w12='mlp.w12',
                       w3='mlp.w3'),
    'sam': dict(qkv='attn.qkv', proj='attn.proj', fc1='ffn.layers.0.0',
                fc2='ffn.layers.1'),
}
SUBLAYER_OF = dict(qkv='attn', proj='attn', fc1='ffn', fc2='ffn', w12='ffn',
                   w3='ffn')
BOTTLENECK = dict(type='MiMiAdapter', hidden_dim=6)  # x + up(gelu(down x))
LORA = dict(type='LoRA', r=2, alpha=4)


def stock_backbone(host):
    """The stock backbone, layer scales off their constant init."""
    _, stock_cls, args, _ = HOSTS[host]
    torch.manual_seed(0)
    stock = stock_cls(**copy.deepcopy(args))
    with torch.no_grad():
        for name, param in stock.named_parameters():
            if 'gamma' in name:
                param.uniform_(0.2, 1.5)
    stock.eval()
    return stock


def build(host, adapters, **kwargs):
    """(adapted backbone, stock backbone) with the same frozen weights and
    adapters moved off their (often identity) init."""
    name, _, args, _ = HOSTS[host]
    stock = stock_backbone(host)
    model = MODELS.build(dict(type=name, adapters=adapters,
                              **copy.deepcopy(args), **kwargs))
    model.eval()
    missing, unexpected = model.load_state_dict(stock.state_dict(),
                                                strict=False)
    adapter_keys = tuple(f'{n}.' for n, _ in model.named_adapters())
    assert not unexpected
    assert all(k.startswith(adapter_keys) or k == 'register_tokens'
               for k in missing)
    torch.manual_seed(1)
    with torch.no_grad():
        for _, adapter in model.named_adapters():
            for param in adapter.parameters():
                param.add_(torch.randn_like(param) * 0.2)
    return model, stock


def tokens(kind, batch=2, extra=1):
    """Layer input: (B, extra + H*W, C) tokens, or SAM's (B, H, W, C) map."""
    _, _, hw = BLOCKS[kind]
    torch.manual_seed(3)
    if kind.startswith('sam'):
        return torch.randn(batch, *hw, 16)
    return torch.randn(batch, extra + hw[0] * hw[1], 16)


def run(kind, block, x):
    """A layer of ``kind`` called as its backbone calls it."""
    _, _, hw = BLOCKS[kind]
    if kind.startswith('eva02'):
        return block(x, hw)
    if kind.startswith('dinov2'):
        block.hw_shape = hw  # what the backbone's patch-embed hook sets
    return block(x)


class KeepResidual(nn.Module):
    """Stands for SAM's FFN: ``ffn(ln2(x), identity=x)`` returns x."""

    def forward(self, x, identity):
        return identity


def stock_sublayers(kind, stock_block):
    """{sublayer: (norm, body, scale)} from a copy of the stock block: body
    is the sublayer up to its layer scale, scale the layer scale."""
    _, _, hw = BLOCKS[kind]
    ref = copy.deepcopy(stock_block)
    no_residual = lambda h: torch.zeros_like(h)  # noqa: E731
    if kind.startswith('dinov2'):
        gamma1, gamma2 = ref.attn.gamma1, ref.ffn.gamma2
        ref.attn.gamma1, ref.ffn.gamma2 = nn.Identity(), nn.Identity()
        return dict(
            attn=(ref.ln1, ref.attn, gamma1),
            ffn=(ref.ln2, lambda h: ref.ffn(h, identity=no_residual(h)),
                 gamma2))
    if kind.startswith('eva02'):
        return dict(attn=(ref.norm1, lambda h: ref.attn(h, hw), nn.Identity()),
                    ffn=(ref.norm2, ref.mlp, nn.Identity()))
    # SAM: the stock forward's (windowed) attention, from a copy whose ln1
    # and FFN pass their input: copy(m) = m + attn(m).
    ffn = ref.ffn
    ref.ln1, ref.ffn = nn.Identity(), KeepResidual()

    def attn(h):
        m = h.reshape(h.shape[0], *hw, h.shape[-1])
        return (ref(m) - m).reshape(h.shape)

    return dict(attn=(stock_block.ln1, attn, nn.Identity()),
                ffn=(stock_block.ln2,
                     lambda h: ffn(h, identity=no_residual(h)),
                     nn.Identity()))


def bottleneck(adapter, x):
    """MiMi's maths from its weights: up(gelu(down(x)))."""
    return F.linear(F.gelu(F.linear(x, adapter.down.weight)),
                    adapter.up.weight)


def block_ref(parts, x, sublayer, placement, adapter):
    """``x + scale(body(norm(x)))`` per sublayer; at ``sublayer`` the
    placement's formula, with layer scale after a series adapter, before an
    after-drop-path one and not on a parallel one, for A(h) = h +
    bottleneck(h)."""
    def A(h):  # noqa: N802
        return h + bottleneck(adapter, h)

    for name in ('attn', 'ffn'):
        norm, body, scale = parts[name]
        if name != sublayer:
            x = x + scale(body(norm(x)))
        elif placement == 'pre':
            x = x + scale(body(A(norm(x))))
        elif placement == 'series':
            x = x + scale(A(body(norm(x))))
        elif placement == 'after_drop_path':  # outside layer scale too
            x = x + A(scale(body(norm(x))))
        elif placement == 'parallel':
            x = x + scale(body(norm(x))) + bottleneck(adapter, x)
        else:  # post
            x = A(x + scale(body(norm(x))))
    return x


def close(out, ref, rtol=1e-5):
    torch.testing.assert_close(out, ref, rtol=rtol,
                               atol=rtol * ref.abs().max().item())


@pytest.mark.parametrize('sublayer', ['attn', 'ffn'])
@pytest.mark.parametrize('placement', TOKEN_PLACEMENTS)
@pytest.mark.parametrize('kind', BLOCKS)
def test_token_placement_maths(kind, placement, sublayer):
    host, index, _ = BLOCKS[kind]
    model, stock = build(host, {sublayer: {placement: BOTTLENECK}})
    block, stock_block = model.layers[index], stock.layers[index]
    adapter = getattr(block, f'{sublayer}_{placement}')
    x = tokens(kind)
    with torch.no_grad():
        out = run(kind, block, x)
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        ref = block_ref(stock_sublayers(kind, stock_block), flat, sublayer,
                        placement, adapter).reshape(x.shape)
        stock_out = run(kind, stock_block, x)
    close(out, ref)
    assert not torch.allclose(out, stock_out, atol=1e-4)


@pytest.mark.parametrize('kind,weight', [
    (kind, weight) for kind, (host, _, _) in BLOCKS.items()
    for weight in WEIGHTS[host]])
def test_weight_placement_is_the_stock_block_with_an_updated_weight(
        kind, weight):
    host, index, _ = BLOCKS[kind]
    model, stock = build(host, {SUBLAYER_OF[weight]: {weight: LORA}})
    block = model.layers[index]
    stock_block = copy.deepcopy(stock.layers[index])
    path = WEIGHTS[host][weight]
    adapter = block.get_submodule(path).weight_adapter
    x = tokens(kind)
    with torch.no_grad():
        stock_block.get_parameter(f'{path}.weight').add_(
            adapter.lora_B @ adapter.lora_A * (4 / 2))
        close(run(kind, block, x), run(kind, stock_block, x))


def identity_adapters(host):
    """An identity-initialised adapter at every token placement and on
    every linear weight of the host's blocks."""
    repadapter = dict(type='RepAdapter', hidden_dim=4, groups=2)
    adapters = {s: {p: repadapter for p in TOKEN_PLACEMENTS}
                for s in ('attn', 'ffn')}
    for weight in WEIGHTS[host]:
        adapters[SUBLAYER_OF[weight]][weight] = LORA
    return adapters


@pytest.mark.parametrize('host', HOSTS)
def test_identity_init_at_every_placement_is_the_stock_backbone(host):
    name, _, args, size = HOSTS[host]
    stock = stock_backbone(host)
    model = MODELS.build(dict(type=name, adapters=identity_adapters(host),
                              **copy.deepcopy(args)))
    model.eval()
    model.load_state_dict(stock.state_dict(), strict=False)
    img = torch.randn(2, 3, size, size)
    with torch.no_grad():
        for out, ref in zip(model(img), stock(img)):
            close(out, ref, rtol=1e-6)


MERGEABLE = {
    'repadapter_pre': {s: {'pre': dict(type='RepAdapter', hidden_dim=4)}
                       for s in ('attn', 'ffn')},
    'lora_everywhere': None,  # every weight of the host (WEIGHTS)
    'lora_and_repadapter_on_qkv': dict(
        attn=dict(pre=dict(type='RepAdapter', hidden_dim=4), qkv=LORA)),
    'mona_post': {s: {'post': dict(type='Mona', inner_dim=8)}
                  for s in ('attn', 'ffn')},
    'bottleneck_series': {s: {'series': BOTTLENECK} for s in ('attn', 'ffn')},
}
FOLDS_AWAY = ('repadapter_pre', 'lora_everywhere',
              'lora_and_repadapter_on_qkv')


@pytest.mark.parametrize('case', MERGEABLE)
@pytest.mark.parametrize('host', HOSTS)
def test_merged_equals_unmerged(host, case):
    adapters = MERGEABLE[case] or {
        s: {w: LORA for w in WEIGHTS[host] if SUBLAYER_OF[w] == s}
        for s in ('attn', 'ffn')}
    model, stock = build(host, adapters)
    img = torch.randn(2, 3, HOSTS[host][3], HOSTS[host][3])
    with torch.no_grad():
        expected = model(img)
        merged = copy.deepcopy(model).merge_adapters()
        for out, ref in zip(merged(img), expected):
            close(out, ref, rtol=1e-4)
    if case in FOLDS_AWAY:  # a stock state dict, strict, stock layers
        assert not list(merged.named_adapters())
        assert {type(layer) for layer in merged.layers} == {
            type(layer) for layer in stock.layers}
        stock.load_state_dict(merged.state_dict(), strict=True)
        with torch.no_grad():
            for out, ref in zip(stock(img), expected):
                close(out, ref, rtol=1e-4)


def test_series_adapter_sits_inside_layer_scale_and_drop_path():
    """Training mode, drop-path 0.5: the DINOv2 layer equals
    x + drop_path(gamma * A(attn(ln1 x))) with the stock layer scale and
    drop-path modules, then the stock FFN sublayer."""
    args = dict(DINOV2, drop_path_rate=0.5)  # layer 1 drops with p = 0.5
    torch.manual_seed(0)
    stock = VisionTransformer(**args)
    model = MODELS.build(dict(type='AdapterPretrainViT',
                              adapters=dict(attn=dict(series=BOTTLENECK)),
                              **args))
    with torch.no_grad():
        stock.layers[1].attn.gamma1.weight.uniform_(0.2, 1.5)
        model.load_state_dict(stock.state_dict(), strict=False)
        model.layers[1].attn_series.up.weight.normal_()
    block, stock_block = model.layers[1], copy.deepcopy(stock.layers[1])
    gamma, drop_path = stock_block.attn.gamma1, stock_block.attn.out_drop
    stock_block.attn.gamma1 = stock_block.attn.out_drop = nn.Identity()
    block.train(), stock_block.train()
    x = torch.randn(8, 17, 16)
    adapter = block.attn_series
    with torch.no_grad():
        torch.manual_seed(3)
        out = run('dinov2_mlp', block, x)
        torch.manual_seed(3)
        h = stock_block.attn(stock_block.ln1(x))
        y = x + drop_path(gamma(h + bottleneck(adapter, h)))
        ref = stock_block.ffn(stock_block.ln2(y), identity=y)
        torch.manual_seed(4)
        other = run('dinov2_mlp', block, x)
    close(out, ref)
    assert not torch.allclose(out, other)  # drop-path did drop


def test_mona_leaves_class_and_register_tokens_alone():
    """Mona after the FFN residual (post) and parallel to the attention: its
    convs read the H*W patch tokens; the class token and two DINOv2
    registers in front pass it (post) / get no delta (parallel)."""
    mona = dict(type='Mona', inner_dim=8)
    model, stock = build('dinov2_swiglu',
                         dict(attn=dict(parallel=mona), ffn=dict(post=mona)),
                         num_register_tokens=2)
    block, stock_block = model.layers[1], stock.layers[1]
    hw, extra = (4, 4), 3
    x = tokens('dinov2_swiglu', extra=extra)
    parts = stock_sublayers('dinov2_swiglu', stock_block)
    with torch.no_grad():
        out = run('dinov2_swiglu', block, x)
        norm, body, scale = parts['attn']
        delta = block.attn_parallel.delta(x[:, extra:], hw)
        y = x + scale(body(norm(x))) + F.pad(delta, (0, 0, extra, 0))
        norm, body, scale = parts['ffn']
        z = y + scale(body(norm(y)))
        ref = torch.cat([z[:, :extra], block.ffn_post(z[:, extra:], hw)], 1)
    close(out, ref)
    assert torch.equal(out[:, :extra], z[:, :extra])


def test_register_tokens_follow_dinov2():
    """With registers, the backbone is DINOv2's forward: class token, then
    the position table, then the registers after the class token, the
    layers, the final norm, and dense outputs without the registers."""
    model, stock = build('dinov2_swiglu', dict(), num_register_tokens=2)
    assert not model.register_tokens.requires_grad  # pretrained: frozen
    with torch.no_grad():
        model.register_tokens.normal_()
    img = torch.randn(2, 3, 35, 28)  # a 5x4 grid: the table is resized
    with torch.no_grad():
        outs = model(img)
        x, hw = stock.patch_embed(img)
        x = torch.cat([stock.cls_token.expand(2, -1, -1), x], dim=1)
        x = x + resize_pos_embed(stock.pos_embed, stock.patch_resolution, hw,
                                 mode='bicubic', num_extra_tokens=1)
        x = torch.cat([x[:, :1], model.register_tokens.expand(2, -1, -1),
                       x[:, 1:]], dim=1)
        refs = []
        for i, layer in enumerate(stock.layers):
            x = layer(x)
            y = stock.ln1(x) if i == 1 else x
            refs.append(y[:, 3:].reshape(2, *hw, 16).permute(0, 3, 1, 2))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 5, 4)] * 2
    for out, ref in zip(outs, refs):
        close(out, ref)


def test_a_swiglu_block_names_its_weights():
    with pytest.raises(ValueError,
                       match=r"no placement 'fc1'; the ffn sublayer offers "
                       r".*'w12', 'w3'\]"):
        build('dinov2_swiglu', dict(ffn=dict(fc1=LORA)))
    with pytest.raises(ValueError,
                       match=r"no placement 'w3'; the ffn sublayer offers "
                       r".*'fc1', 'fc2'\]"):
        build('dinov2_mlp', dict(ffn=dict(w3=LORA)))


def wrapped(backbone):
    model = nn.Module()
    model.backbone = backbone
    model.neck = nn.Linear(2, 2)
    return model


def expected_policy_part(backbone, policy):
    """What each policy trains, from module types and the layout."""
    params = dict(backbone.named_parameters())
    last = f'layers.{len(backbone.layers) - 1}.'
    if policy == 'bitfit':  # every parameter named for a bias
        return {n for n in params if 'bias' in n.rsplit('.', 1)[-1]}
    if policy == 'bitfit_orig':  # bias vectors only
        return {n for n in params if n.endswith(('.bias', '_bias'))}
    if policy == 'normtuning':
        return {f'{m}.{p}' for m, module in backbone.named_modules()
                if isinstance(module, nn.LayerNorm)
                for p, _ in module.named_parameters(recurse=False)}
    if policy == 'partial1':  # the last layer, nothing after it
        return {n for n in params if n.startswith(last)}
    if policy == 'partial1_orig':  # the last layer and what follows it
        after = ('ln1.', 'ln2.', 'channel_reduction.')
        return {n for n in params if n.startswith((last, *after))}
    assert policy == 'fixed', policy
    return set()


@pytest.mark.parametrize('policy', [p for p in POLICIES if p != 'full'])
@pytest.mark.parametrize('host', HOSTS)
def test_freeze_policy_trains_exactly_its_part(host, policy):
    model, _ = build(host, dict())
    flags = policy_flags(wrapped(model), FreezePolicy(**POLICIES[policy][0]))
    trained = {n[len('backbone.'):] for n, t in flags.items()
               if t and n.startswith('backbone.')}
    assert trained == expected_policy_part(model, policy)
    assert (trained != set()) == (policy != 'fixed')
    assert flags['neck.weight']


# The adapter methods of the dinov2 host (E3VA's side network, a backbone of
# its own, has no EVA-02 / SAM form: tests/test_e3va.py).
DINOV2_HOST_METHODS = [m for m in METHODS.values()
                       if m.host == 'dinov2' and 'adapters' in m.backbone]


@pytest.mark.parametrize('method', DINOV2_HOST_METHODS,
                         ids=lambda m: m.name)
@pytest.mark.parametrize('host', ['eva02_rope', 'sam'])
def test_every_method_of_the_table_runs_on_eva02_and_sam(host, method):
    """The dinov2 host's method entries on the other two hosts: stock output
    shapes, one AdamW step moves the adapters and no frozen weight, merged
    == unmerged, and what folds away leaves the stock backbone."""
    adapters = copy.deepcopy(method.backbone['adapters'])
    model, stock = build(host, adapters)
    img = torch.randn(2, 3, HOSTS[host][3], HOSTS[host][3])
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()
              if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters()
                 if p.requires_grad}
    assert set(trainable) == set(model.adapter_param_names()) != set()
    model.train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = sum(out.square().mean() for out in model(img))
    loss.backward()
    optimizer.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    assert any(not torch.equal(params[n], v) for n, v in trainable.items())
    model.eval()
    with torch.no_grad():
        expected, refs = model(img), stock(img)
        assert [o.shape for o in expected] == [r.shape for r in refs]
        merged = copy.deepcopy(model).merge_adapters()
        for out, ref in zip(merged(img), expected):
            close(out, ref, rtol=1e-4)
    if method.merges:
        stock.load_state_dict(merged.state_dict(), strict=True)


def test_official_file_loaded_without_conversion_names_the_fix(tmp_path):
    """A DINOv2-layout file given to the host without convert_weights: the
    frozen-weight guard names convert_weights and the converter tool."""
    stock = stock_backbone('dinov2_mlp')
    official = {k.replace('layers.', 'blocks.'): v
                for k, v in stock.state_dict().items()}
    path = str(tmp_path / 'dinov2_official.pth')
    torch.save(official, path)
    model = MODELS.build(dict(
        type='AdapterPretrainViT', adapters=dict(attn=dict(qkv=LORA)),
        init_cfg=dict(type='Pretrained', checkpoint=path), **DINOV2))
    with pytest.raises(PretrainedMismatchError,
                       match='convert_weights=True.*convert_pretrain_vit'):
        model.init_weights()


@pytest.mark.parametrize('host', ['dinov2_mlp', 'eva02_rope', 'sam'])
def test_late_layer_adapters_build_no_graph_before_them(host):
    """``adapter_blocks=dict(layers=[1])``: layer 0 stays stock and runs
    without a graph; outputs and layer 1's gradients equal those of adapters
    in every layer whose layer-0 LoRA is still at its identity init
    (lora_B = 0)."""
    adapters = dict(attn=dict(qkv=LORA))
    late, _ = build(host, adapters, adapter_blocks=dict(layers=[1]))
    assert late.adapter_blocks == dict(layers=[1])
    assert not any('lora' in n for n, _ in late.layers[0].named_parameters())
    everywhere, _ = build(host, adapters)
    state = late.state_dict()
    for name, param in everywhere.state_dict().items():
        if name.startswith('layers.0.') and 'lora_B' in name:
            param.zero_()  # identity LoRA in layer 0
        elif name in state:
            param.copy_(state[name])
    grad_modes = []
    late.layers[0].register_forward_hook(
        lambda m, args, out: grad_modes.append(out.grad_fn is None))
    img = torch.randn(2, 3, HOSTS[host][3], HOSTS[host][3])
    results = []
    for model in (late, everywhere):
        model.train()
        torch.manual_seed(3)  # the same drop-path draws
        outs = model(img)
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum()
            for o in outs).backward()
        results.append((outs, {n: p.grad for n, p in model.named_parameters()
                               if p.grad is not None}))
    assert grad_modes == [True]  # no graph through the stock layer 0
    (outs, grads), (ref_outs, ref_grads) = results
    for out, ref in zip(outs, ref_outs):
        close(out.detach(), ref.detach(), rtol=1e-5)
    assert set(grads) == set(late.adapter_param_names())
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        close(grad, ref_grads[name], rtol=1e-4)


@pytest.mark.parametrize('host', ['dinov2_mlp', 'eva02_rope', 'sam'])
def test_bf16_frozen_saves_on_mmpretrain_hosts(host):
    """Same forward, gradients within 1% of the fp32 saves'."""
    adapters = dict(ffn=dict(series=BOTTLENECK))
    plain, _ = build(host, adapters)
    rounded, _ = build(host, adapters, frozen_activations_dtype='bfloat16')
    rounded.load_state_dict(plain.state_dict(), strict=True)
    img = torch.randn(2, 3, HOSTS[host][3], HOSTS[host][3])
    grads = []
    for model in (plain, rounded):
        model.train()
        torch.manual_seed(3)
        outs = model(img)
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum()
            for o in outs).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()
                                if p.grad is not None]))
    rel = ((grads[1] - grads[0]).norm() / grads[0].norm()).item()
    assert 0 < rel < 1e-2, rel
