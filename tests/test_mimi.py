"""MiMi adapter and MiMiSwin: the score, masking == shrinking, training
safety of masked neurons, deploy shapes rebuilt from config."""
import copy

import pytest
import torch
from mmdet.models.backbones import SwinTransformer

from mmpeft import merge_adapters
from mmpeft.adapters import MiMiAdapter
from mmpeft.engine import MiMiPruneHook
from mmpeft.engine.mimi_prune_hook import global_prune_masks
from mmpeft.models import MiMiSwin

TINY_SWIN = dict(
    embed_dims=16,
    depths=(1, 2),
    num_heads=(1, 2),
    strides=(4, 2),
    out_indices=(0, 1),
    window_size=4,
    drop_path_rate=0.0)


def randomise(adapter: MiMiAdapter, scale: float = 1.0) -> MiMiAdapter:
    """Non-zero weights everywhere (biases included), masked ones zeroed."""
    with torch.no_grad():
        for param in adapter.parameters():
            param.normal_(std=scale)
    adapter.set_mask(adapter.neuron_mask)
    return adapter


def tiny_swin(**kwargs) -> MiMiSwin:
    model = MiMiSwin(**TINY_SWIN, **kwargs)
    for _, adapter in model.named_slots():
        randomise(adapter, 0.1)
    model.eval()  # mmdet's Swin.train() returns None, so no chaining
    return model


# ---------------------------------------------------------------- the score
def test_importance_is_the_normalised_l1_formula():
    adapter = MiMiAdapter(3, 2)
    with torch.no_grad():
        adapter.down.weight.copy_(torch.tensor([[1., -2., 3.], [0., 0., 1.]]))
        adapter.up.weight.copy_(torch.tensor([[1., 0.], [-1., 2.], [4., 0.]]))
    # neuron 0: (1+2+3) + (1+1+4) = 12; neuron 1: 1 + 2 = 3; 6 weights each
    assert torch.allclose(adapter.importance(), torch.tensor([2.0, 0.5]))


def test_importance_normalisation_makes_widths_comparable():
    """Every weight of magnitude a scores a, whatever the adapter width, so
    a wide adapter does not outrank a narrow one by its size alone."""
    narrow, wide = MiMiAdapter(4, 3), MiMiAdapter(32, 5)
    for adapter, value in ((narrow, 0.5), (wide, 0.25)):
        with torch.no_grad():
            for param in adapter.parameters():
                param.fill_(-value)
    assert torch.allclose(narrow.importance(), torch.full((3, ), 0.5))
    assert torch.allclose(wide.importance(), torch.full((5, ), 0.25))
    masks = global_prune_masks([narrow, wide], live_after=3)
    assert masks.tolist() == [1, 1, 1, 0, 0, 0, 0, 0]


def test_global_selection_is_uneven_across_adapters():
    torch.manual_seed(0)
    strong, weak = (randomise(MiMiAdapter(16, 8), scale)
                    for scale in (1.0, 0.1))
    with torch.no_grad():  # one weak neuron that matters, one strong that not
        weak.down.weight[2] *= 100
        strong.up.weight[:, 5] = 0
        strong.down.weight[5] = 0
    masks = global_prune_masks([strong, weak], live_after=8)
    strong_mask, weak_mask = masks.split(8)
    assert strong_mask.tolist() == [1, 1, 1, 1, 1, 0, 1, 1]
    assert weak_mask.tolist() == [0, 0, 1, 0, 0, 0, 0, 0]
    # already masked neurons stay masked and do not count as live
    strong.set_mask(strong_mask)
    weak.set_mask(weak_mask)
    again = global_prune_masks([strong, weak], live_after=4)
    assert again.sum() == 4 and not (again.bool() & ~masks.bool()).any()


# ------------------------------------------------------ masked == shrunk
@pytest.mark.parametrize('bias', [False, True])
def test_masked_and_shrunk_adapters_compute_the_same(bias):
    torch.manual_seed(0)
    x = torch.randn(2, 12, 8)
    for keep in ([1, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1], [1] * 6):
        masked = randomise(MiMiAdapter(8, 6, bias=bias))
        masked.set_mask(torch.tensor(keep))
        shrunk = copy.deepcopy(masked).shrink()
        assert shrunk.hidden_dim == shrunk.width == sum(keep)
        assert torch.allclose(masked(x, (3, 4)), shrunk(x, (3, 4)), atol=1e-6)
        assert sum(p.numel()
                   for p in shrunk.parameters()) == masked.num_active_params()


@pytest.mark.parametrize('bias', [False, True])
def test_all_masked_adapter_is_the_identity_without_parameters(bias):
    masked = randomise(MiMiAdapter(8, 4, bias=bias))
    masked.set_mask(torch.zeros(4))
    x = torch.randn(2, 6, 8)
    assert torch.equal(masked(x, (2, 3)), x)  # the up bias is gated off too
    shrunk = copy.deepcopy(masked).deploy()
    assert torch.equal(shrunk(x, (2, 3)), x)
    assert list(shrunk.parameters()) == [] and shrunk.num_active_params() == 0
    rebuilt = MiMiAdapter(8, 0, bias=bias)
    rebuilt.load_state_dict(shrunk.state_dict())
    assert torch.equal(rebuilt(x, (2, 3)), x)


def test_masked_neurons_get_no_update_and_stay_zero():
    torch.manual_seed(0)
    adapter = randomise(MiMiAdapter(8, 6, bias=True))
    adapter.set_mask(torch.tensor([1, 0, 1, 0, 1, 1]))
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=0.1,
                                  weight_decay=0.05)
    for _ in range(3):
        optimizer.zero_grad()
        adapter(torch.randn(4, 5, 8)).square().sum().backward()
        for param, axis in adapter.neuron_axes():
            dead = param.grad.index_select(axis, torch.tensor([1, 3]))
            assert torch.equal(dead, torch.zeros_like(dead))
        optimizer.step()
    for param, axis in adapter.neuron_axes():
        dead = param.index_select(axis, torch.tensor([1, 3]))
        assert torch.equal(dead, torch.zeros_like(dead))
        assert param.index_select(axis, torch.tensor([0, 2])).abs().min() > 0


def test_reset_parameters_keeps_masked_neurons_zero():
    adapter = MiMiAdapter(8, 4)
    adapter.set_mask(torch.tensor([1, 0, 0, 1]))
    adapter.reset_parameters()
    assert adapter.importance()[1:3].tolist() == [0, 0]
    assert adapter.importance()[[0, 3]].min() > 0


# ---------------------------------------------------------------- MiMiSwin
def test_mimi_swin_slots_widths_and_freezing():
    model = MiMiSwin(sigma0=4, **TINY_SWIN)
    names = [name for name, _ in model.named_slots()]
    assert names == [
        'stages.0.blocks.0.attn_adapter', 'stages.0.blocks.0.ffn_adapter',
        'stages.1.blocks.0.attn_adapter', 'stages.1.blocks.0.ffn_adapter',
        'stages.1.blocks.1.attn_adapter', 'stages.1.blocks.1.ffn_adapter'
    ]
    assert model.adapter_widths() == [4, 4, 8, 8, 8, 8]  # C // sigma0
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        f'{slot}.{proj}.weight'
        for slot in names for proj in ('down', 'up')
    }


def test_frozen_weights_do_not_move_under_adamw():
    torch.manual_seed(0)
    model = tiny_swin(sigma0=2)
    model.train()
    frozen = {n: p.clone() for n, p in model.named_parameters()
              if not p.requires_grad}
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=0.1)
    sum(out.sum() for out in model(torch.randn(1, 3, 32, 32))).backward()
    optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters()
               if n in frozen)


def test_merge_adapters_shrinks_and_deploy_cfg_rebuilds_the_shapes():
    torch.manual_seed(0)
    model = tiny_swin(sigma0=2)
    slots = [a for _, a in model.named_slots()]
    masks = [torch.rand(a.hidden_dim) < 0.5 for a in slots]
    masks[1][:] = False  # one adapter emptied entirely
    for adapter, mask in zip(slots, masks):
        adapter.set_mask(mask)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)

    deploy_cfg = model.deploy_backbone_cfg()
    assert deploy_cfg == dict(adapter_widths=[int(m.sum()) for m in masks])
    merge_adapters(model)  # the mixin's merge calls MiMiAdapter.deploy
    assert model.deploy_backbone_cfg() == deploy_cfg
    assert [a.hidden_dim for _, a in model.named_slots()] == \
        deploy_cfg['adapter_widths']
    assert not any(k.startswith('stages.0.blocks.0.ffn_adapter.')
                   and k.endswith('weight') for k in model.state_dict())

    rebuilt = MiMiSwin(sigma0=2, **TINY_SWIN, **deploy_cfg)
    rebuilt.eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        for outs in (model(x), rebuilt(x)):
            for out, ref in zip(outs, expected):
                assert torch.allclose(out, ref, atol=1e-5)


def test_deploy_checkpoint_into_full_width_model_is_a_clear_error():
    shrunk = tiny_swin(sigma0=2)
    for _, adapter in shrunk.named_slots():
        adapter.set_mask(torch.arange(adapter.hidden_dim) < 1)
    shrunk.merge_adapters()
    with pytest.raises(RuntimeError, match='adapter_widths'):
        MiMiSwin(sigma0=2, **TINY_SWIN).load_state_dict(
            shrunk.state_dict(), strict=False)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match='adapter_widths needs 6'):
        MiMiSwin(adapter_widths=[1, 2], **TINY_SWIN)
    with pytest.raises(ValueError, match='sigma0'):
        MiMiSwin(sigma0=0, **TINY_SWIN)
    with pytest.raises(ValueError, match='sigma0=32'):
        MiMiSwin(sigma0=32, **TINY_SWIN)
    with pytest.raises(TypeError, match='adapter_cfg'):
        MiMiSwin(adapter_cfg=dict(type='Mona'), **TINY_SWIN)


def test_stock_swin_loads_mimi_frozen_weights():
    """The frozen part is exactly mmdet's Swin (same keys, same shapes)."""
    model = MiMiSwin(**TINY_SWIN)
    stock = SwinTransformer(**TINY_SWIN)
    missing, unexpected = stock.load_state_dict(model.state_dict(),
                                                strict=False)
    assert missing == []
    assert all('_adapter.' in k for k in unexpected)


# ------------------------------------------------------------ hook planning
def test_plan_reaches_the_target_at_a_known_round():
    hook = MiMiPruneHook(sigma_target=32, rho=0.5)
    # Swin-B at sigma0 = 4: 48 adapters of widths C // 4
    in_dims = [128] * 4 + [256] * 4 + [512] * 36 + [1024] * 4
    plan = hook.plan(in_dims, [c // 4 for c in in_dims])
    assert plan == [6016, 3008, 1504, 752]
    assert sum(in_dims) / plan[-1] == 32
    # a target off the rho grid: the last round removes only what is needed
    plan = MiMiPruneHook(sigma_target=10, rho=0.5).plan([100] * 2, [50] * 2)
    assert plan == [100, 50, 25, 20]


@pytest.mark.parametrize('kwargs, match', [
    (dict(sigma_target=1), 'finite number > 1'),
    (dict(sigma_target=float('inf')), 'finite number > 1'),
    (dict(sigma_target=8, rho=1.0), 'rho'),
    (dict(sigma_target=8, rho=0), 'rho'),
    (dict(sigma_target=8, interval=0), 'interval'),
])
def test_hook_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MiMiPruneHook(**kwargs)


def test_plan_rejects_unreachable_targets():
    with pytest.raises(ValueError, match='remove every neuron'):
        MiMiPruneHook(sigma_target=500).plan([100] * 2, [50] * 2)
    with pytest.raises(ValueError, match='already met'):
        MiMiPruneHook(sigma_target=2).plan([100] * 2, [50] * 2)
