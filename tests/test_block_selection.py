"""Which blocks get adapters (``adapter_blocks``), and no autograd graph
before the first trainable block.

References are built by hand: a stock backbone whose chosen blocks are
re-classed and given their slots one by one, so the selection code is not
what checks itself. Also: bad selections are named errors, and merging,
deploy configs and adapter-only files carry the selection.
"""
import copy

import pytest
import torch
from mmdet.models.backbones import SwinTransformer
from mmengine.registry import MODELS
from mmseg.models.backbones import VisionTransformer
from torch import nn

from mmpeft.adapters import iter_adapters
from mmpeft.engine.export import (AdapterCheckpointError, adapter_checkpoint,
                                  backbone_deploy_cfg,
                                  check_adapter_checkpoint)
from mmpeft.engine.peft_freeze_hook import FreezePolicy, apply_freeze_policy
from mmpeft.models import MiMiSwin, MonaSwinTransformer, RepAdapterViT
from mmpeft.models.placements import parse_adapters
from mmpeft.models.swin import AdapterSwinBlock
from mmpeft.models.vit import AdapterViTLayer

SWIN = dict(pretrain_img_size=32, embed_dims=16, depths=(2, 2, 2, 2),
            num_heads=(1, 2, 2, 4), window_size=4, out_indices=(0, 1, 2, 3),
            drop_path_rate=0.1)
VIT = dict(img_size=(32, 32), patch_size=8, embed_dims=16, num_layers=4,
           num_heads=2, mlp_ratio=2, out_indices=(1, 3))
MONA = dict(type='Mona', inner_dim=8)
SWIN_ADAPTERS = dict(attn=dict(post=MONA), ffn=dict(fc1=dict(type='LoRA',
                                                             r=2)))
VIT_ADAPTERS = dict(attn=dict(qkv=dict(type='LoRA', r=2)),
                    ffn=dict(series=dict(type='MiMiAdapter', hidden_dim=4)))


def moved(model, seed=1):
    """Adapters away from their (near-)identity init."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def block_outputs(model, blocks):
    """Run a training forward; per block: (grad mode inside, output)."""
    seen = []
    handles = [b.register_forward_hook(
        lambda m, args, out: seen.append((torch.is_grad_enabled(), out)))
        for b in blocks]
    model.train()
    outs = model(torch.randn(1, 3, 32, 32))
    for handle in handles:
        handle.remove()
    return seen, outs


def swin_blocks(model):
    return [b for stage in model.stages for b in stage.blocks]


def by_hand(stock, cls, blocks, adapters, width):
    """``stock`` with ``blocks`` re-classed and given ``adapters`` one by
    one; only the adapters train."""
    slots = parse_adapters(adapters)
    for block in blocks:
        cls.adapt(block)
        block.add_slots(slots, width)
    stock.requires_grad_(False)
    for _, adapter in iter_adapters(stock):
        adapter.requires_grad_(True)
    return stock


@pytest.mark.parametrize('host', ['swin', 'vit'])
def test_late_adapters_build_no_graph_before_them(host):
    if host == 'swin':
        model = MODELS.build(dict(type='AdapterSwinTransformer', **SWIN,
                                  adapters=SWIN_ADAPTERS,
                                  adapter_blocks=dict(stages=[-2, -1])))
        blocks, first = swin_blocks(model), 4
    else:
        model = MODELS.build(dict(type='AdapterVisionTransformer', **VIT,
                                  adapters=VIT_ADAPTERS,
                                  adapter_blocks=dict(layers=[2, 3])))
        blocks, first = list(model.layers), 2
    seen, outs = block_outputs(model, blocks)
    assert [grad for grad, _ in seen] == [i >= first
                                          for i in range(len(blocks))]
    assert [out.grad_fn is not None for _, out in seen] == [
        i >= first for i in range(len(blocks))]
    assert [o.requires_grad for o in outs] == \
        ([False, False, True, True] if host == 'swin' else [False, True])
    assert torch.is_grad_enabled()  # restored after the forward


def test_selected_blocks_equal_the_same_adapters_placed_by_hand():
    torch.manual_seed(0)
    stock = SwinTransformer(**SWIN)
    chosen = dict(stages=[3], blocks=[[2, 1]])
    model = moved(MODELS.build(dict(type='AdapterSwinTransformer', **SWIN,
                                    adapters=SWIN_ADAPTERS,
                                    adapter_blocks=chosen)))
    hand = copy.deepcopy(stock)
    for block in [hand.stages[2].blocks[1], *hand.stages[3].blocks]:
        by_hand(hand, AdapterSwinBlock, [block], SWIN_ADAPTERS,
                block.norm1.normalized_shape[0])
    assert model.adapter_blocks == dict(stages=[3], blocks=[[2, 1]])
    assert set(model.state_dict()) == set(hand.state_dict())
    hand.load_state_dict(model.state_dict(), strict=True)
    _assert_same_training_step(model, hand)


def test_selected_layers_equal_the_same_adapters_placed_by_hand():
    torch.manual_seed(0)
    stock = VisionTransformer(**VIT)
    model = moved(MODELS.build(dict(type='AdapterVisionTransformer', **VIT,
                                    adapters=VIT_ADAPTERS,
                                    adapter_blocks=dict(layers=[-1, 1]))))
    hand = copy.deepcopy(stock)
    by_hand(hand, AdapterViTLayer, [hand.layers[1], hand.layers[3]],
            VIT_ADAPTERS, 16)
    assert model.adapter_blocks == dict(layers=[1, 3])
    hand.load_state_dict(model.state_dict(), strict=True)
    _assert_same_training_step(model, hand)


def _assert_same_training_step(model, hand):
    """Same outputs and the same adapter gradients; the same seed draws the
    same dropout and drop-path masks."""
    x = torch.randn(2, 3, 32, 32)
    results = []
    for net in (model, hand):
        net.train()
        torch.manual_seed(5)
        results.append(net(x))
    outs, refs = results
    loss = sum(o.square().mean() for o in outs)
    ref_loss = sum(r.square().mean() for r in refs)
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out, ref, rtol=1e-5,
                                   atol=1e-6 * ref.abs().max().item())
    loss.backward(), ref_loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    ref_grads = {n: p.grad for n, p in hand.named_parameters()
                 if p.requires_grad}
    assert set(grads) == set(ref_grads) and grads
    for name, grad in ref_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grads[name], grad, rtol=1e-4,
                                   atol=1e-5 * grad.abs().max().item(),
                                   msg=name)


def test_the_first_trainable_block_is_read_at_run_time():
    model = MonaSwinTransformer(**SWIN, adapter_cfg=MONA,
                                adapter_blocks=dict(stages=[3]))
    blocks = swin_blocks(model)
    seen, _ = block_outputs(model, blocks)
    assert [grad for grad, _ in seen] == [False] * 6 + [True] * 2
    # BitFit-like: a bias of the second block trains -> graph from there;
    # the output norm of stage 0 trains -> it gets its gradient although
    # the stage's blocks are frozen.
    model.stages[0].blocks[1].norm1.bias.requires_grad = True
    model.norm0.weight.requires_grad = True
    seen, outs = block_outputs(model, blocks)
    assert [grad for grad, _ in seen] == [False] + [True] * 7
    sum(o.square().mean() for o in outs).backward()
    assert model.stages[0].blocks[1].norm1.bias.grad.abs().sum() > 0
    assert model.norm0.weight.grad.abs().sum() > 0
    # A trainable stem: the graph starts at the input.
    model.patch_embed.projection.weight.requires_grad = True
    seen, _ = block_outputs(model, blocks)
    assert all(grad for grad, _ in seen)


def test_frozen_stages_and_partial1_move_the_start_of_the_graph():
    model = MonaSwinTransformer(**SWIN, adapter_cfg=MONA, frozen_stages=2)
    seen, _ = block_outputs(model, swin_blocks(model))  # train() freezes
    assert [grad for grad, _ in seen] == [False] * 4 + [True] * 4
    holder = nn.Module()
    holder.backbone = MODELS.build(dict(type='AdapterSwinTransformer',
                                        **SWIN, adapters=dict()))
    apply_freeze_policy(holder, FreezePolicy(train_last_stage=True))
    seen, _ = block_outputs(holder.backbone, swin_blocks(holder.backbone))
    assert [grad for grad, _ in seen] == [False] * 6 + [True] * 2


def test_checkpointed_blocks_give_the_same_gradients():
    torch.manual_seed(0)
    plain = moved(MonaSwinTransformer(**SWIN, adapter_cfg=MONA,
                                      adapter_blocks=dict(stages=[2, 3])))
    cp = MonaSwinTransformer(**SWIN, adapter_cfg=MONA, with_cp=True,
                             adapter_blocks=dict(stages=[2, 3]))
    cp.load_state_dict(plain.state_dict(), strict=True)
    seen, _ = block_outputs(cp, swin_blocks(cp))
    assert [grad for grad, _ in seen] == [False] * 4 + [True] * 4
    grads = []
    for model in (plain, cp):
        torch.manual_seed(3)  # the same dropout masks
        model.train()
        sum(o.square().mean()
            for o in model(torch.randn(1, 3, 32, 32))).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()
                      if p.grad is not None})
    assert set(grads[0]) == set(grads[1]) == set(plain.adapter_param_names())
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5,
                                   atol=1e-6 * grad.abs().max().item(),
                                   msg=name)


@pytest.mark.parametrize('selection, message', [
    (dict(stages=[4]), 'stage 4 does not exist; this backbone has 4'),
    (dict(stages=[-5]), 'stage -5 does not exist'),
    (dict(blocks=[[1, 2]]), 'block 2 does not exist; stage 1 has 2 blocks'),
    (dict(blocks=[3]), 'is not a \\[stage, block\\] pair'),
    (dict(layers=[0]), "no key 'layers'; this host takes \\['stages', "
     "'blocks'\\]"),
    (dict(stages=[]), 'selects no block'),
    (dict(stages=[1.0]), '1.0 is not an integer index'),
    (dict(stages=3), 'must be a list of indices'),
    ([2, 3], 'must be None \\(every block\\) or a dict'),
])
def test_swin_selection_errors_name_the_problem(selection, message):
    with pytest.raises(ValueError, match=message):
        MonaSwinTransformer(**SWIN, adapter_blocks=selection)


@pytest.mark.parametrize('selection, message', [
    (dict(layers=[4]), 'layer 4 does not exist; this backbone has 4 layers'),
    (dict(stages=[1]), "no key 'stages'; this host takes \\['layers'\\]"),
    (dict(layers=[True]), 'True is not an integer index'),
])
def test_vit_selection_errors_name_the_problem(selection, message):
    with pytest.raises(ValueError, match=f'RepAdapterViT: .*{message}'):
        RepAdapterViT(**VIT, adapter_blocks=selection)


def test_selection_is_canonical_and_keeps_stock_blocks_stock():
    every = MonaSwinTransformer(**SWIN, adapter_blocks=dict(
        stages=[0, 1], blocks=[[2, 0], [2, 1], [3, 0], [3, -1]]))
    assert every.adapter_blocks is None  # every block: as recorded by default
    model = MiMiSwin(**SWIN, adapter_blocks=dict(blocks=[[1, 1], [3, 0],
                                                         [3, 1]]))
    assert model.adapter_blocks == dict(stages=[3], blocks=[[1, 1]])
    assert [type(b).__name__ for b in swin_blocks(model)] == \
        ['SwinBlock'] * 3 + ['AdapterSwinBlock'] + ['SwinBlock'] * 2 + \
        ['AdapterSwinBlock'] * 2
    assert [n for n, _ in model.named_slots()] == [
        f'stages.{s}.blocks.{b}.{slot}' for s, b in ((1, 1), (3, 0), (3, 1))
        for slot in ('attn_adapter', 'ffn_adapter')]
    assert len(model.adapter_widths()) == 6


def _outputs(model):
    torch.manual_seed(2)
    model.eval()
    with torch.no_grad():
        return model(torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize('cfg', [
    dict(type='MonaSwinTransformer', adapter_cfg=MONA,
         adapter_blocks=dict(stages=[-1])),
    dict(type='AdapterSwinTransformer', adapters=SWIN_ADAPTERS,
         adapter_blocks=dict(blocks=[[2, 0], [3, 1]])),
    dict(type='MiMiSwin', size_adapters=8, adapter_blocks=dict(stages=[2])),
    dict(type='RepAdapterViT', adapter_blocks=dict(layers=range(2, 4))),
    dict(type='AdapterVisionTransformer', adapters=VIT_ADAPTERS,
         adapter_blocks=dict(layers=[0, 3])),
], ids=lambda cfg: cfg['type'])
def test_merge_and_deploy_config_carry_the_selection(cfg):
    arch = VIT if 'ViT' in cfg['type'] or 'Vision' in cfg['type'] else SWIN
    cfg = dict(cfg, **arch)
    with MODELS.switch_scope_and_registry(None) as registry:
        model = moved(registry.build(cfg))
        expected = _outputs(model)
        merged = copy.deepcopy(model).merge_adapters()
        for out, ref in zip(_outputs(merged), expected):
            torch.testing.assert_close(out, ref, rtol=1e-4,
                                       atol=1e-5 * ref.abs().max().item())
        deploy = backbone_deploy_cfg(merged, cfg)
        if any(True for _ in merged.named_adapters()):
            assert deploy['adapter_blocks'] == model.adapter_blocks
            assert isinstance(deploy['adapter_blocks'], dict)
        rebuilt = registry.build(deploy)
    rebuilt.load_state_dict(merged.state_dict(), strict=True)
    for out, ref in zip(_outputs(rebuilt), expected):
        torch.testing.assert_close(out, ref, rtol=1e-4,
                                   atol=1e-5 * ref.abs().max().item())


def test_adapter_file_records_the_selection_and_refuses_another():
    def model_with(selection):
        """The same frozen base each time (same seed), fresh adapters."""
        torch.manual_seed(0)
        holder = nn.Module()
        holder.backbone = MonaSwinTransformer(**SWIN, adapter_cfg=MONA,
                                              adapter_blocks=selection)
        return holder

    trained = model_with(dict(stages=[2, 3]))
    moved(trained)
    checkpoint = adapter_checkpoint(trained)
    info = checkpoint['meta']['mmpeft_adapters']
    assert info['adapter_blocks'] == dict(stages=[2, 3])
    assert all(k.startswith(('backbone.stages.2.', 'backbone.stages.3.'))
               for k in checkpoint['state_dict'])
    same = model_with(dict(stages=[-2, -1]))
    base = dict(trained.named_parameters())
    check_adapter_checkpoint(same, checkpoint, base)  # same blocks: fine
    same.load_state_dict(checkpoint['state_dict'], strict=False)
    for out, ref in zip(_outputs(same.backbone), _outputs(trained.backbone)):
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
    other = model_with(dict(stages=[3]))
    with pytest.raises(AdapterCheckpointError,
                       match="adapters in the blocks {'stages': \\[2, 3\\]}"):
        check_adapter_checkpoint(other, checkpoint, base)
