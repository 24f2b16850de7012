"""Several adapters at one place, on both hosts: a list of ``pre`` adapters
applies in its order, folds into the first linear of its sublayer with the
same result, and the order matters; several weight adapters on one weight
add up, each term counts, merged as unmerged.

The references are the stock block's sublayers and each adapter's affine
map / weight update, written from their weights (as tests/test_placements.py
does for one adapter)."""
import copy

import pytest
import torch

from test_placements import (HOSTS, LORA, STOCK_WEIGHTS, build,
                             swin_tokens_and_hw)

REP = dict(type='RepAdapter', hidden_dim=4, groups=2)
PRE_PAIR = {s: {'pre': [REP, REP]} for s in ('attn', 'ffn')}
LORA_R3 = dict(LORA, r=3)  # alpha 4: scale 4/3


def blocks(model, host):
    return ([b for stage in model.stages for b in stage.blocks]
            if host == 'swin' else list(model.layers))


def block_io(host, stock):
    """A block input, its token grid and the call of a (stock or adapted)
    block on it."""
    if host == 'swin':
        x, hw = swin_tokens_and_hw(stock, torch.randn(2, 3, 32, 32))
        return x, hw, lambda block, h: block(h, hw)
    layer_input = torch.randn(2, 17, 16)  # class token + 4x4 patches
    return layer_input, None, lambda block, h: block(h)


def affine(adapter, h):
    """RepAdapter in eval mode from its weights: h + s (B (A h + a) + b)."""
    down = adapter.conv_A.weight.squeeze(-1)
    up = torch.block_diag(*adapter.conv_B.weight.squeeze(-1).chunk(
        adapter.groups, dim=0))
    inner = h @ down.T + adapter.conv_A.bias
    return h + adapter.scale * (inner @ up.T + adapter.conv_B.bias)


def pre_chain_ref(stock_block, x, hw, chains):
    """The stock block with ``x + body(chain(norm(x)))`` in each sublayer,
    ``chains[sublayer]`` applied first to last (``hw``: Swin's grid)."""
    zeros = torch.zeros_like
    bodies = dict(
        attn=(lambda h: stock_block.attn(h, hw)) if hw else
        (lambda h: stock_block.attn(h, identity=zeros(h))),
        ffn=lambda h: stock_block.ffn(h, identity=zeros(h)))
    for sublayer, norm in (('attn', stock_block.norm1),
                           ('ffn', stock_block.norm2)):
        h = norm(x)
        for adapter in chains[sublayer]:
            h = affine(adapter, h)
        x = x + bodies[sublayer](h)
    return x


@pytest.mark.parametrize('host', HOSTS)
def test_pre_adapters_compose_in_list_order_merged_or_not(host):
    """Two affine RepAdapters at ``pre`` of both sublayers: A_2(A_1(h))
    unmerged; merged (folded into qkv / fc1, nothing left) the same, for the
    listed and the swapped order, which differ."""
    model, stock = build(host, PRE_PAIR)
    swapped = copy.deepcopy(model)
    for block in blocks(swapped, host):
        for sublayer in ('attn', 'ffn'):
            chain = getattr(block, f'{sublayer}_pre')
            chain[0], chain[1] = chain[1], chain[0]
    block = blocks(model, host)[1]
    stock_block = blocks(stock, host)[1]
    x, hw, call = block_io(host, stock)
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        # Unmerged: first to last, as listed.
        chains = {s: list(getattr(block, f'{s}_pre')) for s in ('attn', 'ffn')}
        ref = pre_chain_ref(stock_block, x, hw, chains)
        torch.testing.assert_close(call(block, x), ref, rtol=1e-5,
                                   atol=1e-6 * ref.abs().max())
        reversed_ref = pre_chain_ref(
            stock_block, x, hw, {s: c[::-1] for s, c in chains.items()})
        assert not torch.allclose(ref, reversed_ref,
                                  atol=1e-3 * ref.abs().max())
        # Merged: both orders fold into qkv / fc1 and stay what they were.
        outs = {}
        for name, unmerged in (('listed', model), ('swapped', swapped)):
            merged = copy.deepcopy(unmerged).merge_adapters()
            assert not list(merged.named_adapters())
            outs[name] = unmerged(img)
            for out, expected in zip(merged(img), outs[name]):
                torch.testing.assert_close(
                    out, expected, rtol=1e-4,
                    atol=1e-5 * expected.abs().max())
    for listed, other in zip(outs['listed'], outs['swapped']):
        assert not torch.allclose(listed, other,
                                  atol=1e-3 * listed.abs().max())


def lora_delta(adapter, cfg):
    """(alpha / r) B A from the LoRA weights and its config."""
    return adapter.lora_B @ adapter.lora_A * (cfg['alpha'] / cfg['r'])


@pytest.mark.parametrize('host', HOSTS)
@pytest.mark.parametrize('weight', ['qkv', 'fc2'])
def test_weight_adapters_on_one_weight_add_up(host, weight):
    """W x + b + A_1(x) + A_2(x) == (W + delta_1 + delta_2) x + b; without
    either term the output differs; merging adds both into W. ViT ``qkv``
    runs in mmpeft's own attention, every other case in AdaptedLinear."""
    cfgs = [LORA, LORA_R3]
    sublayer = 'attn' if weight == 'qkv' else 'ffn'
    model, stock = build(host, {sublayer: {weight: cfgs}})
    block = blocks(model, host)[1]
    stock_block = blocks(stock, host)[1]
    name = STOCK_WEIGHTS[host][weight]
    owner_name, weight_attr = name.rsplit('.', 1)
    adapters = list(getattr(block.get_submodule(owner_name),
                            f'{weight_attr}_adapter'))
    assert len(adapters) == 2
    x, _, call = block_io(host, stock)
    img = torch.randn(2, 3, 32, 32)

    def stock_with(*terms):
        updated = copy.deepcopy(stock_block)
        with torch.no_grad():
            for adapter, cfg in terms:
                updated.get_parameter(name).add_(lora_delta(adapter, cfg))
        return call(updated, x)

    with torch.no_grad():
        out = call(block, x)
        ref = stock_with(*zip(adapters, cfgs))
        torch.testing.assert_close(out, ref, rtol=1e-5,
                                   atol=1e-6 * ref.abs().max())
        for kept in zip(adapters, cfgs):  # one term left out
            assert not torch.allclose(out, stock_with(kept),
                                      atol=1e-3 * ref.abs().max())
        expected = model(img)
        merged = copy.deepcopy(model).merge_adapters()
        assert not list(merged.named_adapters())
        for out, ref in zip(merged(img), expected):
            torch.testing.assert_close(out, ref, rtol=1e-4,
                                       atol=1e-5 * ref.abs().max())
