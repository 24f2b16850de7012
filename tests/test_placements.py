"""Every placement in both hosts computes the maths it names.

Each reference below is written from the stock block's own sublayers (a copy
of the stock backbone with the same weights) and the adapter's formula, not
by re-running mmpeft's block forward. Also: zero-initialised adapters give
the stock backbone, merged == unmerged for every mergeable placement, frozen
weights stay put under AdamW, and a fully folded model is a stock state dict.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.backbones import SwinTransformer
from mmengine.registry import MODELS
from mmseg.models.backbones import VisionTransformer

from helpers import assert_close_to_scale
from mmpeft.models import TOKEN_PLACEMENTS, WEIGHT_PLACEMENTS

SWIN = dict(pretrain_img_size=32, embed_dims=16, depths=(2, 2),
            num_heads=(1, 2), window_size=4, strides=(4, 2),
            out_indices=(0, 1), drop_path_rate=0.1)
VIT = dict(img_size=(32, 32), patch_size=8, embed_dims=16, num_layers=2,
           num_heads=2, mlp_ratio=2, out_indices=(0, 1), drop_path_rate=0.1)
HOSTS = {
    'swin': ('AdapterSwinTransformer', SwinTransformer, SWIN),
    'vit': ('AdapterVisionTransformer', VisionTransformer, VIT),
}
BOTTLENECK = dict(type='MiMiAdapter', hidden_dim=6)  # x + up(gelu(down x))
LORA = dict(type='LoRA', r=2, alpha=4)


def build(host, adapters):
    """(adapted backbone, stock backbone) with the same frozen weights and
    adapters moved away from their (often identity) init."""
    name, stock_cls, args = HOSTS[host]
    torch.manual_seed(0)
    stock = stock_cls(**args)
    model = MODELS.build(dict(type=name, adapters=adapters, **args))
    stock.eval(), model.eval()  # mmdet's Swin.train() returns None
    missing, unexpected = model.load_state_dict(stock.state_dict(),
                                                strict=False)
    adapter_keys = tuple(f'{n}.' for n, _ in model.named_adapters())
    assert not unexpected and missing
    assert all(k.startswith(adapter_keys) for k in missing)
    torch.manual_seed(1)
    with torch.no_grad():
        for _, adapter in model.named_adapters():
            for param in adapter.parameters():
                param.add_(torch.randn_like(param) * 0.2)
    return model, stock


def bottleneck(adapter, x):
    """MiMi's maths from its weights: up(gelu(down(x)))."""
    return F.linear(F.gelu(F.linear(x, adapter.down.weight)),
                    adapter.up.weight)


def swin_block_ref(stock_block, x, hw, sublayer, placement, adapter):
    """The stock Swin block with ``adapter`` at ``placement`` (eval mode:
    drop-path is the identity)."""
    attn = lambda h: stock_block.attn(h, hw)  # noqa: E731
    ffn = lambda h: stock_block.ffn(h, identity=torch.zeros_like(h))  # noqa
    return block_ref(stock_block.norm1, attn, stock_block.norm2, ffn, x,
                     sublayer, placement, adapter)


def vit_layer_ref(stock_layer, x, sublayer, placement, adapter):
    attn = lambda h: stock_layer.attn(h, identity=torch.zeros_like(h))  # noqa
    ffn = lambda h: stock_layer.ffn(h, identity=torch.zeros_like(h))  # noqa
    return block_ref(stock_layer.norm1, attn, stock_layer.norm2, ffn, x,
                     sublayer, placement, adapter)


def block_ref(norm1, attn, norm2, ffn, x, sublayer, placement, adapter):
    """Two sublayers ``x + body(norm(x))``; at ``sublayer`` the placement's
    formula with the bottleneck ``adapter``: A(h) = h + bottleneck(h)."""
    def A(h):  # noqa: N802
        return h + bottleneck(adapter, h)

    for name, norm, body in (('attn', norm1, attn), ('ffn', norm2, ffn)):
        if name != sublayer:
            x = x + body(norm(x))
        elif placement == 'pre':
            x = x + body(A(norm(x)))
        elif placement in ('series', 'after_drop_path'):  # same in eval
            x = x + A(body(norm(x)))
        elif placement == 'parallel':
            x = x + body(norm(x)) + bottleneck(adapter, x)
        else:  # post
            x = A(x + body(norm(x)))
    return x


def swin_tokens_and_hw(model, img):
    x, hw = model.patch_embed(img)
    return x, hw


@pytest.mark.parametrize('sublayer', ['attn', 'ffn'])
@pytest.mark.parametrize('placement', TOKEN_PLACEMENTS)
def test_swin_token_placement_maths(sublayer, placement):
    model, stock = build('swin', {sublayer: {placement: BOTTLENECK}})
    x, hw = swin_tokens_and_hw(stock, torch.randn(2, 3, 40, 36))  # padded
    block, stock_block = model.stages[0].blocks[1], stock.stages[0].blocks[1]
    adapter = getattr(block, f'{sublayer}_{placement}')
    with torch.no_grad():
        out = block(x, hw)
        ref = swin_block_ref(stock_block, x, hw, sublayer, placement, adapter)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out, stock_block(x, hw), atol=1e-4)


@pytest.mark.parametrize('sublayer', ['attn', 'ffn'])
@pytest.mark.parametrize('placement', TOKEN_PLACEMENTS)
def test_vit_token_placement_maths(sublayer, placement):
    model, stock = build('vit', {sublayer: {placement: BOTTLENECK}})
    x = torch.randn(2, 17, 16)  # class token + 4x4 patches
    layer, stock_layer = model.layers[1], stock.layers[1]
    layer.hw_shape = (4, 4)
    adapter = getattr(layer, f'{sublayer}_{placement}')
    with torch.no_grad():
        out = layer(x)
        ref = vit_layer_ref(stock_layer, x, sublayer, placement, adapter)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, stock_layer(x), atol=1e-4)


def lora_update(adapter):
    """(alpha / r) B A from the LoRA weights."""
    return adapter.lora_B @ adapter.lora_A * (4 / 2)


STOCK_WEIGHTS = {
    'swin': dict(qkv='attn.w_msa.qkv.weight', proj='attn.w_msa.proj.weight',
                 fc1='ffn.layers.0.0.weight', fc2='ffn.layers.1.weight'),
    'vit': dict(qkv='attn.attn.in_proj_weight',
                proj='attn.attn.out_proj.weight',
                fc1='ffn.layers.0.0.weight', fc2='ffn.layers.1.weight'),
}


@pytest.mark.parametrize('host', HOSTS)
@pytest.mark.parametrize('sublayer,weight', [
    (s, w) for s, ws in WEIGHT_PLACEMENTS.items() for w in ws])
def test_weight_placement_is_the_stock_block_with_an_updated_weight(
        host, sublayer, weight):
    model, stock = build(host, {sublayer: {weight: LORA}})
    block = (model.stages[0].blocks[1] if host == 'swin' else model.layers[1])
    stock_block = copy.deepcopy(stock.stages[0].blocks[1] if host == 'swin'
                                else stock.layers[1])
    name = STOCK_WEIGHTS[host][weight]
    owner = block.get_submodule(name.rsplit('.', 1)[0])
    adapter = getattr(owner, f'{name.rsplit(".", 1)[1]}_adapter')
    with torch.no_grad():
        stock_block.get_parameter(name).add_(lora_update(adapter))
        if host == 'swin':
            x, hw = swin_tokens_and_hw(stock, torch.randn(2, 3, 32, 32))
            out, ref = block(x, hw), stock_block(x, hw)
        else:
            x = torch.randn(2, 17, 16)
            out, ref = block(x), stock_block(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


ZERO_INIT = {  # adapters whose official init is the identity
    'pre': dict(type='RepAdapter', hidden_dim=4, groups=2),
    'series': dict(type='RepAdapter', hidden_dim=4, groups=2),
    'after_drop_path': dict(type='RepAdapter', hidden_dim=4, groups=2),
    'parallel': dict(type='RepAdapter', hidden_dim=4, groups=2),
    'post': dict(type='RepAdapter', hidden_dim=4, groups=2),
    'qkv': LORA, 'proj': LORA, 'fc1': LORA, 'fc2': LORA,
}


@pytest.mark.parametrize('host', HOSTS)
def test_identity_init_at_every_placement_is_the_stock_backbone(host):
    adapters = {s: {p: ZERO_INIT[p] for p in TOKEN_PLACEMENTS + ws}
                for s, ws in WEIGHT_PLACEMENTS.items()}
    name, stock_cls, args = HOSTS[host]
    torch.manual_seed(0)
    stock = stock_cls(**args)
    model = MODELS.build(dict(type=name, adapters=adapters, **args))
    stock.eval(), model.eval()  # mmdet's Swin.train() returns None
    model.load_state_dict(stock.state_dict(), strict=False)
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outs, refs = model(img), stock(img)
    for out, ref in zip(outs, refs):  # the stock maths by mmpeft's code
        assert_close_to_scale(out, ref)


MERGEABLE = {
    'repadapter_pre': {s: {'pre': dict(type='RepAdapter', hidden_dim=4)}
                       for s in ('attn', 'ffn')},
    'lora_everywhere': {s: {w: LORA for w in ws}
                        for s, ws in WEIGHT_PLACEMENTS.items()},
    'lora_and_repadapter_on_qkv': dict(
        attn=dict(pre=dict(type='RepAdapter', hidden_dim=4), qkv=LORA)),
    'mona_post': {s: {'post': dict(type='Mona', inner_dim=8)}
                  for s in ('attn', 'ffn')},
    'bottleneck_series': {s: {'series': BOTTLENECK} for s in ('attn', 'ffn')},
}
FOLDS_AWAY = ('repadapter_pre', 'lora_everywhere',
              'lora_and_repadapter_on_qkv')


@pytest.mark.parametrize('host', HOSTS)
@pytest.mark.parametrize('case', MERGEABLE)
def test_merged_equals_unmerged(host, case):
    if host == 'vit' and case == 'mona_post':
        pytest.skip('Mona is spatial; the ViT layer tokens hold a class token')
    model, stock = build(host, MERGEABLE[case])
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(img)
        merged = copy.deepcopy(model).merge_adapters()
        outs = merged(img)
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    if case in FOLDS_AWAY:  # nothing left: a stock state dict, strict
        assert not list(merged.named_adapters())
        stock.load_state_dict(merged.state_dict(), strict=True)
        with torch.no_grad():
            for out, ref in zip(stock(img), expected):
                torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_swin_qkv_fold_with_window_padding_changes_only_padded_keys():
    """Documented limit: with a map that needs window padding, the padded
    tokens are zeros before qkv; after the fold they carry the adapter's
    offset. Without padding the fold is exact (test above)."""
    model, _ = build('swin', dict(attn=dict(pre=dict(type='RepAdapter'))))
    img = torch.randn(1, 3, 40, 36)
    with torch.no_grad():
        expected = model(img)[0]
        merged = copy.deepcopy(model).merge_adapters()(img)[0]
    assert not torch.allclose(merged, expected, atol=1e-6)


@pytest.mark.parametrize('host', HOSTS)
def test_frozen_weights_do_not_move_under_adamw(host):
    adapters = dict(attn=dict(pre=dict(type='RepAdapter', hidden_dim=4),
                              qkv=LORA),
                    ffn=dict(series=BOTTLENECK, parallel=BOTTLENECK,
                             post=BOTTLENECK, fc2=LORA))
    model, _ = build(host, adapters)
    model.train()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()
              if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters()
                 if p.requires_grad}
    assert frozen and trainable
    assert set(trainable) == set(model.adapter_param_names())
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2,
        weight_decay=0.05)
    for _ in range(2):
        loss = sum(out.square().mean() for out in model(
            torch.randn(2, 3, 32, 32)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    params = dict(model.named_parameters())
    for name, before in frozen.items():
        assert torch.equal(params[name], before), name
    assert all(not torch.equal(params[n], t) for n, t in trainable.items())


def test_unknown_placement_and_sublayer_are_named():
    with pytest.raises(ValueError, match=r"attn has no placement 'fc1'"):
        MODELS.build(dict(type='AdapterSwinTransformer',
                          adapters=dict(attn=dict(fc1=LORA)), **SWIN))
    with pytest.raises(ValueError, match="no sublayer 'mlp'"):
        MODELS.build(dict(type='AdapterVisionTransformer',
                          adapters=dict(mlp=dict(pre=LORA)), **VIT))
    with pytest.raises(TypeError, match='weight placement'):
        MODELS.build(dict(type='AdapterSwinTransformer',
                          adapters=dict(attn=dict(post=LORA)), **SWIN))
    with pytest.raises(TypeError, match='token placement'):
        MODELS.build(dict(type='AdapterSwinTransformer',
                          adapters=dict(ffn=dict(fc1=BOTTLENECK)), **SWIN))


def test_several_adapters_in_one_place_apply_in_order():
    two = [BOTTLENECK, dict(BOTTLENECK, hidden_dim=3)]
    model, stock = build('swin', dict(ffn=dict(post=two)))
    block, stock_block = model.stages[0].blocks[0], stock.stages[0].blocks[0]
    x, hw = swin_tokens_and_hw(stock, torch.randn(1, 3, 32, 32))
    first, second = block.ffn_post
    with torch.no_grad():
        y = stock_block(x, hw)
        y = y + bottleneck(first, y)
        ref = y + bottleneck(second, y)
        torch.testing.assert_close(block(x, hw), ref, rtol=1e-5, atol=1e-6)


def test_series_adapter_sits_inside_drop_path():
    """Training mode, drop-path 0.5: the block equals
    x + drop_path(A(attn(norm1 x))) with the stock drop-path module, not
    x + A(drop_path(attn(...)))."""
    args = dict(SWIN, drop_path_rate=0.5)
    torch.manual_seed(0)
    stock = SwinTransformer(**args)
    model = MODELS.build(dict(type='AdapterSwinTransformer',
                              adapters=dict(attn=dict(series=BOTTLENECK)),
                              **args))
    model.load_state_dict(stock.state_dict(), strict=False)
    block = model.stages[1].blocks[1]  # drop prob 0.5 here
    stock_block = copy.deepcopy(stock.stages[1].blocks[1])
    drop_path = stock_block.attn.drop
    stock_block.attn.drop = torch.nn.Identity()
    block.train(), stock_block.train()
    x, hw = torch.randn(8, 16, 32), (4, 4)
    adapter = block.attn_series
    with torch.no_grad():
        torch.manual_seed(3)
        out = block(x, hw)
        torch.manual_seed(3)
        h = stock_block.attn(stock_block.norm1(x), hw)
        y = x + drop_path(h + bottleneck(adapter, h))
        ref = stock_block.ffn(stock_block.norm2(y), identity=y)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


# Identity-init adapters that draw no random numbers in training mode, and
# the dropout rate each case is compared with: mmpeft's own attention (weight
# adapters on qkv) returns a contiguous (B, N, C) output where the stock one
# is a transposed (N, B, C) view, so the dropout after it draws the same
# numbers in another element order (the same distribution, other elements).
IDENTITY_IN_TRAINING = {
    'token': ({s: {p: dict(type='RepAdapter', hidden_dim=4, dropout=0.0)
                   for p in TOKEN_PLACEMENTS} for s in WEIGHT_PLACEMENTS},
              0.1),
    'weight': ({s: {w: LORA for w in ws}
                for s, ws in WEIGHT_PLACEMENTS.items()}, 0.0),
}


@pytest.mark.parametrize('placements', IDENTITY_IN_TRAINING)
def test_vit_layer_keeps_the_stock_drop_path_in_training(placements):
    """Training mode, drop-path 0.5, the same seed: a ViT layer with identity
    adapters (token placements: packed attention, with dropout 0.1 too;
    weight placements: mmpeft's own attention) computes what the stock mmseg
    layer computes with its own drop-path modules. Stock mmseg drops paths on
    the FFN branch only (the attention's ``dropout_layer`` is ``Dropout(0)``),
    so must the adapted layer; other GEMMs, so a tolerance."""
    adapters, drop_rate = IDENTITY_IN_TRAINING[placements]
    args = dict(VIT, drop_path_rate=0.5, drop_rate=drop_rate)
    torch.manual_seed(0)
    stock = VisionTransformer(**args)
    model = MODELS.build(dict(type='AdapterVisionTransformer',
                              adapters=adapters, **args))
    model.load_state_dict(stock.state_dict(), strict=False)
    layer = model.layers[1]  # drop prob 0.5 here
    stock_layer = copy.deepcopy(stock.layers[1])
    layer.hw_shape = (4, 4)
    layer.train(), stock_layer.train()
    x = torch.randn(8, 17, 16)
    with torch.no_grad():
        torch.manual_seed(3)
        out = layer(x)
        torch.manual_seed(3)
        ref = stock_layer(x)
        # The same draws without the FFN drop-path (it draws last): the
        # samples it dropped or scaled differ.
        stock_layer.ffn.dropout_layer = torch.nn.Identity()
        torch.manual_seed(3)
        no_drop_path = stock_layer(x)
    scale = ref.abs().max()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6 * scale)
    assert not torch.allclose(ref, no_drop_path, atol=1e-2 * scale)
    assert isinstance(layer.attn.dropout_layer, torch.nn.Dropout)
    assert layer.attn.dropout_layer.p == 0


def test_mimi_swin_adapters_read_the_sublayer_outputs():
    """Forward hooks on the stock sublayers (the window attention and the
    FFN layers) see exactly what each MiMi adapter gets as input."""
    model = MODELS.build(dict(type='MiMiSwin', sigma0=2, **SWIN))
    model.eval()
    seen = {}

    def keep(key):
        def hook(module, args, output):
            seen[key] = args[0] if key.startswith('adapter') else output
        return hook

    block = model.stages[0].blocks[1]
    block.attn.register_forward_hook(keep('attn'))
    block.ffn.layers.register_forward_hook(keep('ffn'))
    block.attn_adapter.register_forward_hook(keep('adapter_attn'))
    block.ffn_adapter.register_forward_hook(keep('adapter_ffn'))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert torch.equal(seen['adapter_attn'], seen['attn'])
    assert torch.equal(seen['adapter_ffn'], seen['ffn'])
