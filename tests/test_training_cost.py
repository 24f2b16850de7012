"""Cheaper PEFT training with the same maths: ``adapter_cp`` (adapters
recomputed in backward), the packed self-attention of the ViT layers and the
attention kernels of ``AdapterVisionTransformer`` (``attention=``)."""
import pytest
import torch
from torch.autograd.graph import saved_tensors_hooks

from mmpeft.models import MiMiSwin, MonaSwinTransformer, RepAdapterViT

SWIN = dict(embed_dims=32, depths=(2, 2), num_heads=(1, 2), window_size=4,
            out_indices=(0, 1), drop_path_rate=0.1)
VIT = dict(img_size=(32, 32), patch_size=8, embed_dims=32, num_layers=2,
           num_heads=2, mlp_ratio=2, out_indices=(0, 1), drop_path_rate=0.1)
# Swin: dropout 0.1 inside Mona and drop-path both draw random numbers.
BUILDERS = {
    'mona': (lambda **kw: MonaSwinTransformer(
        **SWIN, adapter_cfg=dict(type='Mona', inner_dim=16), **kw),
             (1, 3, 45, 38)),
    # MiMi sits inside drop-path: a batch of 4 keeps every block's adapter
    # in the graph (a single image may be dropped).
    'mimi': (lambda **kw: MiMiSwin(**SWIN, **kw), (4, 3, 45, 38)),
    'repadapter': (lambda **kw: RepAdapterViT(**VIT, **kw), (1, 3, 32, 32)),
}


def build_pair(name):
    build, shape = BUILDERS[name]
    torch.manual_seed(0)
    plain = build()
    recomputed = build(adapter_cp=True)
    for model in (plain, recomputed):
        for adapter_name, adapter in model.named_adapters():
            if hasattr(adapter, 'reset_parameters'):
                adapter.reset_parameters()
    with torch.no_grad():  # adapters away from their (near-)identity init
        for param in plain.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
    recomputed.load_state_dict(plain.state_dict(), strict=True)
    return plain, recomputed, torch.randn(*shape)


def step(model, x, seed=3):
    """Training forward + backward; returns (gradients, bytes saved)."""
    model.train()
    saved = []

    def pack(tensor):
        saved.append(tensor.untyped_storage().nbytes())
        return tensor

    torch.manual_seed(seed)
    with saved_tensors_hooks(pack, lambda t: t):
        loss = sum(out.square().mean() for out in model(x))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()
             if p.grad is not None}
    return grads, sum(saved)


@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_recomputed_adapters_give_the_plain_gradients(name):
    plain, recomputed, x = build_pair(name)
    expected, _ = step(plain, x)
    got, _ = step(recomputed, x)
    assert set(got) == set(expected) == set(plain.adapter_param_names())
    for key, grad in expected.items():
        assert grad.abs().sum() > 0, key
        torch.testing.assert_close(got[key], grad, rtol=1e-5, atol=1e-7,
                                   msg=key)


def test_mona_recomputation_keeps_fewer_bytes_for_backward():
    plain, recomputed, x = build_pair('mona')
    _, plain_bytes = step(plain, x)
    _, recomputed_bytes = step(recomputed, x)
    # Counted outside backward: only the adapter inputs stay, which the
    # block keeps anyway (Mona saves ~15 tensors of its own per call).
    assert recomputed_bytes < 0.7 * plain_bytes, (recomputed_bytes,
                                                  plain_bytes)


def test_outputs_and_inference_unchanged():
    plain, recomputed, x = build_pair('mona')
    for model in (plain, recomputed):
        model.eval()
    with torch.no_grad():
        for a, b in zip(plain(x), recomputed(x)):
            assert torch.equal(a, b)


def test_with_cp_blocks_do_not_recompute_adapters_twice():
    _, shape = BUILDERS['mona']
    model = MonaSwinTransformer(**SWIN, with_cp=True, adapter_cp=True)
    calls = {}
    for name, adapter in model.named_adapters():
        adapter.register_forward_pre_hook(
            lambda *args, name=name: calls.update({name: calls.get(name, 0) + 1}))
    model.train()
    sum(out.sum() for out in model(torch.randn(*shape))).backward()
    # The forward and the block's recomputation; a nested adapter
    # checkpoint would run each adapter a third time.
    assert calls == {name: 2 for name, _ in model.named_adapters()}


@pytest.mark.parametrize('frozen', [False, True])
def test_packed_self_attention_is_the_stock_attention(frozen):
    """compat.packed_self_attention: outputs and gradients of mmcv's own
    forward, with dropout and drop-path active (same seed)."""
    from mmcv.cnn.bricks.transformer import MultiheadAttention

    from mmpeft.compat import packed_self_attention
    torch.manual_seed(0)
    attn = MultiheadAttention(16, 2, attn_drop=0.1, proj_drop=0.1,
                              dropout_layer=dict(type='DropPath',
                                                 drop_prob=0.2),
                              batch_first=True).train()
    attn.requires_grad_(not frozen)
    x = torch.randn(3, 7, 16, requires_grad=True)
    results = []
    for forward in (lambda: attn(x, identity=x),
                    lambda: x + attn.dropout_layer(attn.proj_drop(
                        packed_self_attention(attn, x)))):
        torch.manual_seed(1)
        out = forward()
        grads = torch.autograd.grad(
            out.square().sum(),
            [x] + [p for p in attn.parameters() if p.requires_grad])
        results.append((out, grads))
    (ref, ref_grads), (out, grads) = results
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert len(grads) == len(ref_grads) == (1 if frozen else 5)
    for grad, expected in zip(grads, ref_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5)


# The attention kernels of AdapterVisionTransformer: same maths, one kernel
# for every layer, full fine-tuning on the host with train_backbone.
KERNEL_VIT = dict(img_size=(32, 32), patch_size=4, embed_dims=32,
                  num_layers=2, num_heads=2, mlp_ratio=2, out_indices=(0, 1))


def _kernel_step(model, x):
    model.train()
    outs = model(x)
    torch.manual_seed(4)
    loss = sum((out * torch.randn_like(out)).sum() for out in outs)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(
        loss, [p for p in model.parameters() if p.requires_grad])
    return outs, dict(zip(names, grads))


@pytest.mark.parametrize('kernel', ['stock', 'packed', 'sdpa'])
def test_every_attention_kernel_trains_as_the_stock_vit(kernel):
    from mmseg.models.backbones import VisionTransformer

    from mmpeft.models import AdapterVisionTransformer
    torch.manual_seed(0)
    stock = VisionTransformer(**KERNEL_VIT)
    model = AdapterVisionTransformer(**KERNEL_VIT, adapters=dict(),
                                     attention=kernel, train_backbone=True)
    model.load_state_dict(stock.state_dict(), strict=True)
    assert all(p.requires_grad for p in model.parameters())
    assert all(getattr(layer, 'attention', 'stock') == kernel
               for layer in model.layers)
    x = torch.randn(2, 3, 32, 32)
    (outs, grads), (refs, ref_grads) = (_kernel_step(m, x)
                                        for m in (model, stock))
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out, ref, rtol=1e-5,
                                   atol=1e-5 * ref.abs().max().item())
    assert set(grads) == set(ref_grads)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4,
                                   atol=1e-5 * grad.abs().max().item(),
                                   msg=name)


def test_lora_on_qkv_gives_the_same_gradients_with_either_kernel():
    from mmpeft.models import AdapterVisionTransformer
    adapters = dict(attn=dict(qkv=dict(type='LoRA', r=4, alpha=4),
                              proj=dict(type='LoRA', r=4, alpha=4)))
    torch.manual_seed(0)
    models = [AdapterVisionTransformer(**KERNEL_VIT, adapters=adapters,
                                       attention=kernel)
              for kernel in ('packed', 'sdpa')]
    with torch.no_grad():
        for param in models[0].parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    models[1].load_state_dict(models[0].state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    (outs, grads), (refs, ref_grads) = (_kernel_step(m, x) for m in models)
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out, ref, rtol=1e-5,
                                   atol=1e-5 * ref.abs().max().item())
    assert set(grads) == set(ref_grads) == set(
        models[0].adapter_param_names())
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4,
                                   atol=1e-5 * grad.abs().max().item(),
                                   msg=name)


def test_sdpa_keeps_no_attention_map_for_backward():
    from mmpeft.models import AdapterVisionTransformer
    tokens = (32 // 4)**2 + 1
    shapes = {}
    for kernel in ('packed', 'sdpa'):
        model = AdapterVisionTransformer(**KERNEL_VIT, adapters=dict(),
                                         attention=kernel,
                                         train_backbone=True)
        saved = shapes[kernel] = []
        with saved_tensors_hooks(
                lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
            _kernel_step(model, torch.randn(2, 3, 32, 32))
    maps = [s for s in shapes['packed'] if s[-2:] == (tokens, tokens)]
    assert len(maps) >= 2  # softmax output and the weights @ v, per layer
    assert not [s for s in shapes['sdpa'] if s[-2:] == (tokens, tokens)]


def test_unknown_attention_kernel_is_a_clear_error():
    from mmpeft.models import AdapterVisionTransformer
    with pytest.raises(ValueError, match="attention must be one of "
                       "\\['stock', 'packed', 'sdpa'\\], got 'flash'"):
        AdapterVisionTransformer(**KERNEL_VIT, adapters=dict(),
                                 attention='flash')
