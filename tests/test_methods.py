"""The same checks for every method of the method table (mmpeft/methods.py):
a method added there is tested here with no edit.

Forward shapes equal the stock backbone's; only adapter weights train and the
frozen ones do not move under AdamW; merged == unmerged, and a method that
merges away leaves a stock state dict; a state dict reloads into a fresh
model; the deploy backbone config rebuilds the merged model exactly.
"""
import copy

import pytest
import torch
from mmdet.models.backbones import SwinTransformer
from mmengine.registry import MODELS
from mmpretrain.models.backbones import VisionTransformer as PretrainViT
from mmseg.models.backbones import VisionTransformer

from mmpeft.engine.export import backbone_deploy_cfg
from mmpeft.methods import METHODS

HOST_ARGS = {
    'swin': (SwinTransformer,
             dict(pretrain_img_size=32, embed_dims=16, depths=(2, 2),
                  num_heads=(1, 2), window_size=4, strides=(4, 2),
                  out_indices=(0, 1))),
    'vit': (VisionTransformer,
            dict(img_size=(32, 32), patch_size=8, embed_dims=16,
                 num_layers=2, num_heads=2, mlp_ratio=2, out_indices=(0, 1))),
    # DINOv2-g's layer: layer scale and a SwiGLU FFN (w12 / w3).
    'dinov2': (PretrainViT,
               dict(arch=dict(embed_dims=16, num_layers=2, num_heads=2,
                              feedforward_channels=32),
                    img_size=32, patch_size=8, layer_scale_init_value=0.5,
                    layer_cfgs=dict(ffn_type='swiglu_fused'),
                    out_type='featmap', out_indices=(0, 1))),
}


def backbone_cfg(method):
    return dict(HOST_ARGS[method.host][1], **copy.deepcopy(method.backbone))


def trained(method):
    """(model, stock) with equal frozen weights, adapters off their init."""
    stock_cls, args = HOST_ARGS[method.host]
    torch.manual_seed(0)
    stock = stock_cls(**args)
    model = MODELS.build(backbone_cfg(method))
    stock.eval(), model.eval()  # mmdet's Swin.train() returns None
    model.load_state_dict(stock.state_dict(), strict=False)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    return model, stock


def outputs(model, seed=2):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(torch.randn(2, 3, 32, 32))


def assert_same(outs, refs, tol=1e-5):
    assert len(outs) == len(refs)
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out, ref, rtol=tol, atol=tol)


@pytest.fixture(params=list(METHODS))
def method(request):
    return METHODS[request.param]


def test_outputs_have_the_stock_shapes(method):
    model, stock = trained(method)
    assert [o.shape for o in outputs(model)] == [o.shape
                                                for o in outputs(stock)]


def test_only_adapters_train_and_frozen_weights_stay(method):
    model, _ = trained(method)
    adapter_params = set(model.adapter_param_names())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == adapter_params and trainable
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()
              if not p.requires_grad}
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2,
        weight_decay=0.05)
    model.train()
    for _ in range(2):
        loss = sum(o.square().mean()
                   for o in model(torch.randn(2, 3, 32, 32)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())


def test_merged_equals_unmerged(method):
    model, stock = trained(method)
    expected = outputs(model)
    merged = copy.deepcopy(model).merge_adapters()
    assert_same(outputs(merged), expected, tol=1e-4)
    if method.merges:
        assert not list(merged.named_adapters())
        stock.load_state_dict(merged.state_dict(), strict=True)
        assert_same(outputs(stock), expected, tol=1e-4)


def test_state_dict_reloads_into_a_fresh_model(method):
    model, _ = trained(method)
    fresh = MODELS.build(backbone_cfg(method))
    fresh.eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert_same(outputs(fresh), outputs(model), tol=0)


def test_deploy_config_rebuilds_the_merged_model(method):
    model, _ = trained(method)
    merged = copy.deepcopy(model).merge_adapters()
    cfg = backbone_deploy_cfg(merged, backbone_cfg(method))
    with MODELS.switch_scope_and_registry(None) as registry:
        rebuilt = registry.build(cfg)
    rebuilt.eval()
    rebuilt.load_state_dict(merged.state_dict(), strict=True)
    assert_same(outputs(rebuilt), outputs(model), tol=1e-4)
