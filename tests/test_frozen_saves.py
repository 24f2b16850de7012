"""``frozen_activations_dtype``: what the frozen backbone saves for backward,
stored in bfloat16. Off by default; on, it stores fewer bytes (counted with
a pack hook of the test), the forward is unchanged and the gradients stay
close to the fp32 ones."""
import pytest
import torch
from torch.autograd.graph import saved_tensors_hooks

from mmpeft.models import MonaSwinTransformer, RepAdapterViT, frozen_saves
from mmpeft.models.frozen_saves import FrozenSavesPacker, adapter_scope

SWIN = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
            window_size=4, out_indices=(0, 1, 2, 3))
VIT = dict(img_size=(32, 32), patch_size=8, embed_dims=32, num_layers=4,
           num_heads=2, mlp_ratio=2, out_indices=(1, 3))
BUILDERS = {
    # Mona in the last two stages: frozen saves in stages 2-3 next to the
    # adapters' own.
    'mona_last2': (lambda **kw: MonaSwinTransformer(
        **SWIN, adapter_cfg=dict(type='Mona', inner_dim=16),
        adapter_blocks=dict(stages=[2, 3]), **kw), (2, 3, 64, 64)),
    'repadapter': (lambda **kw: RepAdapterViT(**VIT, **kw), (2, 3, 32, 32)),
}


def pair(name, **kw):
    """(fp32 model, bf16-saves model) with the same weights."""
    build, shape = BUILDERS[name]
    torch.manual_seed(0)
    plain = build(**kw)
    with torch.no_grad():  # adapters away from their (near-)identity init
        for param in plain.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
    rounded = build(frozen_activations_dtype='bfloat16', **kw)
    rounded.load_state_dict(plain.state_dict(), strict=True)
    return plain, rounded, torch.randn(*shape)


def step(model, x):
    """Training forward + backward of a loss no norm makes constant;
    returns (outputs, gradients)."""
    model.train()
    torch.manual_seed(3)  # the same dropout masks
    outs = model(x)
    torch.manual_seed(4)
    sum((out * torch.randn_like(out)).sum() for out in outs).backward()
    return outs, {n: p.grad for n, p in model.named_parameters()
                  if p.grad is not None}


def saved_activation_bytes(model, x, monkeypatch):
    """Bytes of the non-parameter tensors a training step keeps for
    backward, as stored: counted by a pack hook of this test, wrapped
    around the model's own pack hook when it has one (the innermost
    hook is the one autograd calls)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    stored = []

    def count(tensor):
        if torch.is_tensor(tensor) and tensor.untyped_storage().data_ptr() \
                not in params:
            stored.append(tensor.numel() * tensor.element_size())

    def outer(tensor):
        count(tensor)
        return tensor

    model_pack = FrozenSavesPacker.pack

    def inner(self, tensor):
        packed = model_pack(self, tensor)
        count(getattr(packed, 'tensor', packed))
        return packed

    monkeypatch.setattr(FrozenSavesPacker, 'pack', inner)
    with saved_tensors_hooks(outer, lambda t: t):
        step(model, x)
    monkeypatch.undo()
    return sum(stored)


def test_off_by_default_every_save_stays_fp32():
    build, shape = BUILDERS['mona_last2']
    model = build()
    assert model.frozen_activations_dtype is None
    dtypes = []

    def pack(tensor):
        dtypes.append(tensor.dtype)
        return tensor

    # No hook of the model's own: this outer one sees every save.
    with saved_tensors_hooks(pack, lambda t: t):
        step(model, torch.randn(*shape))
    assert len(dtypes) > 50
    assert {d for d in dtypes if d.is_floating_point} == {torch.float32}


@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_bf16_saves_keep_fewer_bytes_and_close_gradients(name, monkeypatch):
    plain, rounded, x = pair(name)
    fp32_bytes = saved_activation_bytes(plain, x, monkeypatch)
    bf16_bytes = saved_activation_bytes(rounded, x, monkeypatch)
    assert bf16_bytes < 0.8 * fp32_bytes, (bf16_bytes, fp32_bytes)
    outs, grads = step(plain, x)
    rounded_outs, rounded_grads = step(rounded, x)
    for out, ref in zip(rounded_outs, outs):
        assert torch.equal(out, ref)  # the same forward computation
    assert set(grads) == set(rounded_grads) == set(
        plain.adapter_param_names())
    diff = torch.stack([(rounded_grads[k] - g).norm()
                        for k, g in grads.items()]).norm()
    norm = torch.stack([g.norm() for g in grads.values()]).norm()
    assert 0 < diff / norm < 1e-2, (diff / norm).item()
    assert all(p.dtype == torch.float32 for p in rounded.parameters())


def test_checkpointed_blocks_still_match():
    """with_cp: checkpointing's own hooks take over inside the blocks."""
    plain, rounded, x = pair('mona_last2', with_cp=True)
    _, grads = step(plain, x)
    _, rounded_grads = step(rounded, x)
    for key, grad in grads.items():
        torch.testing.assert_close(rounded_grads[key], grad, rtol=2e-2,
                                   atol=2e-2 * grad.abs().max().item())


def test_the_packer_rounds_activations_only():
    weight = torch.nn.Parameter(torch.randn(4, 4))
    module = torch.nn.Linear(4, 4)
    module.weight = weight
    packer = FrozenSavesPacker(module, torch.bfloat16)
    x = torch.randn(3, 4)
    packed = packer.pack(x)
    assert packed.tensor.dtype == torch.bfloat16
    assert packer.pack(x) is packed  # saved twice, stored once
    restored = packer.unpack(packed)
    assert restored.dtype == torch.float32
    torch.testing.assert_close(restored, x, rtol=2**-8, atol=0)
    assert packer.pack(weight) is weight
    view = weight.t()  # a view of a weight, e.g. what a matmul saves
    assert packer.pack(view) is view
    mask = torch.rand(3, 4) > 0.5
    assert packer.pack(mask) is mask
    half = x.to(torch.bfloat16)
    assert packer.pack(half) is half
    with adapter_scope():
        assert packer.pack(torch.randn(2)).dtype == torch.float32


def test_unknown_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match='frozen_activations_dtype must be '
                       "None \\(off\\) or one of \\['bfloat16', 'float16'\\]"):
        MonaSwinTransformer(**SWIN, frozen_activations_dtype='int8')
    assert frozen_saves.DTYPES['bfloat16'] is torch.bfloat16
