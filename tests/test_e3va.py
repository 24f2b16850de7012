"""E3VA (mmpeft/adapters/e3va.py, mmpeft/models/e3va_{swin,vit,
pretrain_vit}.py): the adapter and the highway compute the equations of the
module docstring (checked against a transcription written here from the
stock blocks and the raw parameters), the backbone runs without a graph and
keeps no activation for backward, its features are the frozen stock
backbone's, a training step moves only the highway (neck, heads), and the
task file (highway + neck + heads) reloads onto the stock backbone."""
import copy
import glob
import importlib
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.backbones import SwinTransformer
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmpretrain.models.backbones import VisionTransformer as PretrainViT
from mmseg.models.backbones import VisionTransformer
from torch import nn

from helpers import REPO_ROOT
from mmpeft.adapters import E3VAAdapter, build_adapter
from mmpeft.adapters.e3va import HighwayRun
from mmpeft.comparison import hosts_of
from mmpeft.engine.checkpoint_io import load_file
from mmpeft.engine.export import (adapter_checkpoint, apply_adapter_checkpoint,
                                  save_atomic)
from mmpeft.methods import METHODS
from mmpeft.models.pretrain_vit import AdapterPretrainViT
from test_comparison_configs import (TASKS, assert_only_adapters_moved,
                                     tiny_voc_cfg, train_one_step)

# Three Swin stages with outputs at 0 and 2 (stage 1's state goes through two
# merging layers unseen), three ViT layers with outputs at 0 and 2; on
# mmpretrain's ViT (DINOv2) with layer scale and an MLP, and with layer
# scale, a SwiGLU FFN and two registers (the stock reference: the adapter
# host without adapters, whose registers tests/test_mmpretrain_hosts.py
# checks against DINOv2's code; mmpretrain's ViT has none).
DINOV2 = dict(arch=dict(embed_dims=16, num_layers=3, num_heads=2,
                        feedforward_channels=32),
              img_size=32, patch_size=8, layer_scale_init_value=0.5,
              out_type='featmap', out_indices=(0, 2), final_norm=True,
              drop_path_rate=0.1)
HOSTS = {
    'swin': (SwinTransformer, 'E3VASwinTransformer',
             dict(pretrain_img_size=32, embed_dims=16, depths=(2, 1, 1),
                  num_heads=(1, 2, 4), window_size=4, strides=(4, 2, 2),
                  out_indices=(0, 2), drop_path_rate=0.1)),
    'vit': (VisionTransformer, 'E3VAViT',
            dict(img_size=(32, 32), patch_size=8, embed_dims=16, num_layers=3,
                 num_heads=2, mlp_ratio=2, out_indices=(0, 2),
                 final_norm=True, drop_path_rate=0.1)),
    'dinov2': (PretrainViT, 'E3VAPretrainViT', DINOV2),
    'dinov2_registers': (
        lambda **args: AdapterPretrainViT(adapters={}, **args),
        'E3VAPretrainViT',
        dict(DINOV2, num_register_tokens=2,
             layer_cfgs=dict(ffn_type='swiglu_fused'))),
}
# The E3VA model's own arguments: on the ViT, mmcv's stock attention call, so
# that its frozen path runs the very same ops as the stock backbone (the
# default packed kernel agrees to rounding only).
E3VA_ARGS = {'swin': {}, 'vit': dict(attention='stock'), 'dinov2': {},
             'dinov2_registers': {}}
ADAPTER = dict(type='E3VAAdapter', hidden_dim=8, rank=2)
CONFIGS = [f'configs/e3va/{task.format(b)}.py'
           for b in ('swinb', 'vitb') for task in TASKS] + [
               f'configs/e3va/{task.format("dinov2b")}.py'
               for task in TASKS[:2]]  # UperNet, Mask R-CNN
CONFIG_HOSTS = {'swinb': 'swin', 'vitb': 'vit', 'dinov2b': 'dinov2'}


def gelu_erf(h):
    return 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))


def adapter_ref(adapter, x):
    """U_2 U_1 gelu(D_2 D_1 x + b_D) + b_U from the raw factors."""
    d1, d2 = adapter.down1.weight, adapter.down2.weight
    u1, u2 = adapter.up1.weight, adapter.up2.weight
    hidden = gelu_erf(x @ d1.T @ d2.T + adapter.down2.bias)
    return hidden @ u1.T @ u2.T + adapter.up2.bias


def layer_norm_ref(norm, x):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def pair(host, fresh=False):
    """(E3VA model, the stock backbone frozen) with the same frozen weights,
    in float64 and eval mode; the highway off its init unless ``fresh``."""
    stock_cls, e3va, args = HOSTS[host]
    torch.manual_seed(0)
    stock = stock_cls(**copy.deepcopy(args)).double().requires_grad_(False)
    with torch.no_grad():  # layer scales off their constant, registers off 0
        for name, param in stock.named_parameters():
            if '.gamma' in name:
                param.uniform_(0.2, 1.5)
            elif name == 'register_tokens':
                param.normal_()
    model = MODELS.build(dict(copy.deepcopy(args), type=e3va,
                              adapter_cfg=ADAPTER, **E3VA_ARGS[host]))
    model.double()
    missing, unexpected = model.load_state_dict(stock.state_dict(),
                                                strict=False)
    assert not unexpected and all(k.startswith('highway.') for k in missing)
    if not fresh:
        torch.manual_seed(1)
        with torch.no_grad():
            for param in model.highway.parameters():
                param.add_(torch.randn_like(param) * 0.3)
    stock.eval(), model.eval()
    return model, stock


def images(seed=2):
    torch.manual_seed(seed)
    return torch.randn(2, 3, 32, 32, dtype=torch.float64)


def block_inputs(stock, blocks, x):
    """The stock outputs and the input arguments of every block."""
    inputs = []
    handles = [b.register_forward_pre_hook(lambda m, a: inputs.append(a))
               for b in blocks]
    with torch.no_grad():
        features = stock(x)
    for handle in handles:
        handle.remove()
    return features, inputs


def swin_reference(model, stock, x):
    """The highway equations on Swin, from each block's input: attention
    and MLP outputs recomputed with the stock sublayers, adapters and norms
    from their raw parameters, merging with the stock stage's layer."""
    blocks = [b for stage in stock.stages for b in stage.blocks]
    features, inputs = block_inputs(stock, blocks, x)
    highway, h, states, index = model.highway.blocks, 0, [], 0
    for s, stage in enumerate(stock.stages):
        for block in stage.blocks:
            tokens, hw_shape = inputs[index]
            a = block.attn(block.norm1(tokens), hw_shape)
            f = block.ffn.layers(block.norm2(tokens + a))
            h = h + adapter_ref(highway[index]['attn'], a) + adapter_ref(
                highway[index]['ffn'], f)
            index += 1
        if s in stock.out_indices:
            states.append(h)
        if stage.downsample is not None:
            h = stage.downsample(h, hw_shape)[0]
    return features, states


def vit_reference(model, stock, x):
    """The same on the ViT: attention / MLP outputs of the stock layers
    (identity 0: the sublayer output alone), class token included."""
    features, inputs = block_inputs(stock, stock.layers, x)
    highway, h, states = model.highway.blocks, 0, []
    for index, layer in enumerate(stock.layers):
        tokens, = inputs[index]
        zero = torch.zeros_like(tokens)
        a = layer.attn(layer.ln1(tokens), identity=zero)
        f = layer.ffn(layer.ln2(tokens + a), identity=zero)
        h = h + adapter_ref(highway[index]['attn'], a) + adapter_ref(
            highway[index]['ffn'], f)
        if index in stock.out_indices:
            states.append(h)
    return features, states


def attention_ref(attn, x):
    """mmpretrain's MultiheadAttention up to its layer scale, from the raw
    weights: softmax(q k^T / sqrt(d)) v per head, then the projection."""
    b, n, c = x.shape
    qkv = (x @ attn.qkv.weight.T + attn.qkv.bias).reshape(
        b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv
    weights = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1]**-0.5, -1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, c)
    return out @ attn.proj.weight.T + attn.proj.bias


def ffn_ref(ffn, x):
    """The MLP (fc1, exact GELU, fc2) or fused SwiGLU (w12: silu gate times
    value, w3) up to its layer scale, from the raw weights."""
    if hasattr(ffn, 'w12'):
        assert isinstance(ffn.norm, nn.Identity)  # no hidden norm here
        gate, value = (x @ ffn.w12.weight.T + ffn.w12.bias).chunk(2, -1)
        return (F.silu(gate) * value) @ ffn.w3.weight.T + ffn.w3.bias
    fc1, fc2 = ffn.layers[0][0], ffn.layers[1]
    return gelu_erf(x @ fc1.weight.T + fc1.bias) @ fc2.weight.T + fc2.bias


def pretrain_vit_reference(model, stock, x):
    """On mmpretrain's ViT: each sublayer's output before its layer scale
    (the reading mmpeft/models/e3va_pretrain_vit.py documents), the layer
    scale applied on the residual stream only; every token carried, and at
    each output the patch tokens (class token and registers dropped)."""
    features, inputs = block_inputs(stock, stock.layers, x)
    extra = 1 + getattr(stock, 'num_register_tokens', 0)
    highway, h, states = model.highway.blocks, 0, []
    for index, layer in enumerate(stock.layers):
        tokens, = inputs[index]
        a = attention_ref(layer.attn, layer.ln1(tokens))
        residual = tokens + layer.attn.gamma1.weight * a
        f = ffn_ref(layer.ffn, layer.ln2(residual))
        h = h + adapter_ref(highway[index]['attn'], a) + adapter_ref(
            highway[index]['ffn'], f)
        if index in stock.out_indices:
            states.append(h[:, extra:])
    return features, states


REFERENCES = {'swin': swin_reference, 'vit': vit_reference,
              'dinov2': pretrain_vit_reference,
              'dinov2_registers': pretrain_vit_reference}


@pytest.fixture(params=list(HOSTS))
def host(request):
    return request.param


# ------------------------------------------------------------------ maths
def test_adapter_is_the_dual_low_rank_bottleneck():
    c, m, k = 12, 6, 3
    adapter = E3VAAdapter(c, hidden_dim=m, rank=k).double()
    torch.manual_seed(1)
    with torch.no_grad():
        for param in adapter.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    assert adapter.down1.weight.shape == (k, c)
    assert adapter.down2.weight.shape == (m, k)
    assert adapter.up1.weight.shape == (k, m)
    assert adapter.up2.weight.shape == (c, k)
    assert sum(p.numel() for p in adapter.parameters()) == \
        2 * k * (c + m) + m + c
    x = torch.randn(2, 5, c, dtype=torch.float64)
    torch.testing.assert_close(adapter.delta(x), adapter_ref(adapter, x),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(adapter(x), x + adapter_ref(adapter, x),
                               rtol=0, atol=1e-12)
    assert type(build_adapter(dict(type='E3VAAdapter'), c)) is E3VAAdapter
    with pytest.raises(ValueError, match='rank'):
        E3VAAdapter(c, rank=0)


def test_highway_follows_the_equations(host):
    model, stock = pair(host)
    x = images()
    with torch.no_grad():
        features, states = REFERENCES[host](model, stock, x)
        outs = model(x)
    assert len(states) == len(model.highway.norms) == 2
    for out, feature, state, norm in zip(outs, features, states,
                                         model.highway.norms):
        b, c, hgt, wid = feature.shape
        assert state.shape[1] in (hgt * wid, hgt * wid + 1)  # (+ cls token)
        with torch.no_grad():
            joined = layer_norm_ref(norm, state[:, -hgt * wid:])
        expected = feature + joined.transpose(1, 2).reshape(b, c, hgt, wid)
        assert (expected - feature).abs().max() > 0.1  # the highway counts
        torch.testing.assert_close(out, expected, rtol=1e-10,
                                   atol=1e-10 * expected.abs().max())


def test_fresh_model_returns_exactly_the_frozen_backbone(host):
    """The join norms start at scale 0 and bias 0: the stock features."""
    model, stock = pair(host, fresh=True)
    x = images()
    with torch.no_grad():
        for out, ref in zip(model(x), stock(x)):
            assert torch.equal(out, ref)


# ------------------------------------------------- no graph in the backbone
def record_highway(monkeypatch, model):
    """Log every HighwayRun call and the features handed to the join."""
    events, joined = [], []
    for name in ('absorb', 'keep', 'transform'):
        original = getattr(HighwayRun, name)

        def logged(self, *args, _original=original, _name=name):
            events.append((_name, args))
            return _original(self, *args)

        monkeypatch.setattr(HighwayRun, name, logged)
    join = model.highway.join

    def record_join(features, states):
        joined.append(features)
        return join(features, states)

    monkeypatch.setattr(model.highway, 'join', record_join)
    return events, joined


def saved_tensors(fn):
    """``fn()``'s result and the tensors autograd saved for backward."""
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    return result, saved


def test_backbone_builds_no_graph_and_keeps_no_activation(host, monkeypatch):
    """Every block runs with grad disabled; the tensors saved for backward
    are exactly those of the highway's own ops (replayed alone on the
    activations the blocks handed over); the features the highway joins are
    the frozen stock backbone's, bit for bit, with no graph behind them."""
    model, stock = pair(host)
    model.train()
    stock.train()
    blocks = [block for block, _, _ in model.sublayer_outputs()]
    grad_in_blocks = []
    for block in blocks:
        block.register_forward_pre_hook(
            lambda m, a: grad_in_blocks.append(torch.is_grad_enabled()))
    events, joined = record_highway(monkeypatch, model)
    x = images()
    torch.manual_seed(3)  # drop-path draws: the same in both forwards
    outs, saved = saved_tensors(lambda: model(x))
    assert grad_in_blocks == [False] * len(blocks)
    assert all(out.grad_fn is not None for out in outs)

    features, = joined
    assert all(f.grad_fn is None and not f.requires_grad for f in features)
    torch.manual_seed(3)
    with torch.no_grad():
        for feature, ref in zip(features, stock(x)):
            assert torch.equal(feature, ref)

    monkeypatch.undo()

    def highway_alone():
        run = HighwayRun(model.highway, grad=True)
        for name, args in events:
            getattr(run, name)(*args)
        return model.highway.join(features, run.outputs)

    replayed, saved_alone = saved_tensors(highway_alone)
    assert len(saved) == len(saved_alone) > 0
    assert sum(t.numel() for t in saved) == sum(t.numel()
                                                 for t in saved_alone)
    for out, again in zip(outs, replayed):
        assert torch.equal(out, again)


def test_gradients_reach_the_highway_only_and_adapter_cp_keeps_them(host):
    model, _ = pair(host)
    model.train()
    x = images()

    def grads(adapter_cp):
        model.adapter_cp = adapter_cp
        model.zero_grad()
        torch.manual_seed(3)
        sum(o.square().mean() for o in model(x)).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()
                if p.grad is not None}

    plain = grads(False)
    assert set(plain) == {n for n, _ in model.highway.named_parameters(
        prefix='highway')}
    assert all(g.abs().max() > 0 for g in plain.values())
    recomputed = grads(True)
    for name, grad in plain.items():
        torch.testing.assert_close(recomputed[name], grad, rtol=1e-10,
                                   atol=1e-12)


def test_output_cls_token_is_refused_with_the_fix():
    _, e3va, args = HOSTS['vit']
    with pytest.raises(ValueError, match='output_cls_token=False'):
        MODELS.build(dict(args, type=e3va, output_cls_token=True))


@pytest.mark.parametrize('out_type', ['cls_token', 'raw', 'avg_featmap'])
def test_an_out_type_without_maps_is_refused_with_the_fix(out_type):
    """The highway joins (B, C, H, W) maps: only out_type='featmap' has
    them (mmpretrain's default is 'cls_token')."""
    _, e3va, args = HOSTS['dinov2']
    args = dict(copy.deepcopy(args), out_type=out_type)
    with pytest.raises(ValueError, match="out_type='featmap'"):
        MODELS.build(dict(args, type=e3va))
    if out_type == 'cls_token':
        del args['out_type']
        with pytest.raises(ValueError, match="out_type='cls_token'"):
            MODELS.build(dict(args, type=e3va))


def test_e3va_hosts_are_the_three_with_an_e3va_backbone():
    """EVA-02 and SAM have adapter hosts but no E3VA form: the comparison
    names the hosts E3VA has (and refuses their baselines,
    tests/test_comparison.py)."""
    assert hosts_of('e3va') == ['swin', 'vit', 'dinov2']
    assert {m.backbone['type'] for m in METHODS.values()
            if m.name.startswith('e3va')} == {
                'E3VASwinTransformer', 'E3VAViT', 'E3VAPretrainViT'}


# --------------------------------------------------- task file and configs
def test_task_file_reloads_strictly_onto_the_stock_backbone(host, tmp_path):
    """The adapter-only file holds the highway, the neck and the heads; with
    the stock backbone's state dict it rebuilds the trained model."""

    def detector():
        holder = nn.Module()
        holder.backbone, _ = pair(host, fresh=True)
        holder.neck = nn.Linear(2, 2).double()
        holder.bbox_head = nn.Linear(2, 2).double()
        return holder

    trained = detector()
    _, stock = pair(host, fresh=True)
    torch.manual_seed(4)
    with torch.no_grad():
        for param in trained.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.3)
    task_file = adapter_checkpoint(trained)
    highway = {f'backbone.{n}' for n, _ in
               trained.backbone.highway.named_parameters(prefix='highway')}
    assert set(task_file['state_dict']) == highway | {
        'neck.weight', 'neck.bias', 'bbox_head.weight', 'bbox_head.bias'}

    base = {f'backbone.{k}': v for k, v in stock.state_dict().items()}
    assert not set(base) & set(task_file['state_dict'])
    fresh = detector()
    fresh.load_state_dict({**base, **task_file['state_dict']}, strict=True)
    x = images()
    with torch.no_grad():
        for out, ref in zip(fresh.backbone(x), trained.backbone(x)):
            assert torch.equal(out, ref)

    # The engine's path (tools/test.py --adapter): hash-checked on the base.
    path = str(tmp_path / 'task.pth')
    save_atomic(task_file, path)
    checkpoint = dict(state_dict=dict(base))
    apply_adapter_checkpoint(detector(), checkpoint, path)
    assert set(checkpoint['state_dict']) == set(fresh.state_dict())


def test_every_e3va_config_names_the_method_table_backbone():
    """(tests/test_configs.py builds every config; the VOC ones train
    below.)"""
    found = {osp.relpath(p, REPO_ROOT)
             for p in glob.glob(osp.join(REPO_ROOT, 'configs/e3va/*.py'))}
    assert found == set(CONFIGS)
    for config in CONFIGS:
        host = CONFIG_HOSTS[osp.basename(config).split('_')[1]]
        cfg = Config.fromfile(osp.join(REPO_ROOT, config))
        backbone, expected = cfg.model.backbone, METHODS[f'e3va_{host}']
        assert backbone.type == expected.backbone['type']
        assert backbone.adapter_cfg.to_dict() == \
            expected.backbone['adapter_cfg']
        assert backbone.init_cfg.type == 'Pretrained' and \
            backbone.convert_weights
        assert {'PEFTFreezeHook', 'AdapterMergeHook'} <= {
            hook['type'] for hook in cfg.custom_hooks}
        assert 'mmpeft' in cfg.custom_imports.imports


@pytest.mark.parametrize('config', [c for c in CONFIGS if 'fasterrcnn' in c])
def test_one_tiny_voc_step_moves_only_the_highway(config, demo_data,
                                                  tmp_path):
    """And AdapterMergeHook writes the deploy model (highway kept) and the
    task file beside the checkpoint."""
    cfg = tiny_voc_cfg(config, demo_data, tmp_path)
    cfg.default_hooks.checkpoint.interval = 1
    before, after, adapters = train_one_step(cfg)
    assert_only_adapters_moved(before, after, adapters)
    assert all(n.startswith('highway.') for n in adapters)

    deploy = Config.fromfile(str(tmp_path / 'iter_1_deploy.py'))
    assert deploy.model.backbone.type == cfg.model.backbone.type
    init_default_scope(deploy.default_scope)
    registry = importlib.import_module(f'{deploy.default_scope}.registry')
    model = registry.MODELS.build(deploy.model)
    state = load_file(str(tmp_path / 'iter_1_deploy.pth'))['state_dict']
    model.load_state_dict(state, strict=True)
    assert all(torch.equal(state[f'backbone.{n}'], p)
               for n, p in after.items())

    task_file = load_file(str(tmp_path / 'iter_1_adapters.pth'))
    backbone_keys = {k for k in task_file['state_dict']
                     if k.startswith('backbone.')}
    assert backbone_keys == {f'backbone.{n}' for n in adapters}
    assert any(k.startswith('neck') for k in task_file['state_dict'])
    assert any(k.startswith('roi_head') for k in task_file['state_dict'])


@pytest.mark.parametrize('option', [dict(adapter_blocks=dict(stages=[1])),
                                    dict(frozen_activations_dtype='bfloat16')])
def test_host_options_without_effect_are_refused(host, option):
    """Block selection and bf16 saves would change nothing on a graph-free
    backbone whose highway spans every block: an error, not a silent no-op."""
    _, e3va, args = HOSTS[host]
    if host != 'swin' and 'adapter_blocks' in option:
        option = dict(adapter_blocks=dict(layers=[1]))
    with pytest.raises(ValueError, match=next(iter(option))):
        MODELS.build(dict(copy.deepcopy(args), type=e3va, **option))
