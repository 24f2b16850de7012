"""RepAdapterViT: a stock mmseg ViT plus adapters that train alone and merge
away; the ViTDet neck; the four RepAdapter configs."""
import copy
import glob
import json
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmseg.models.backbones import VisionTransformer

import mmpeft
from helpers import (REPO_ROOT, assert_close_to_scale, load_tool,
                     tiny_runner_cfg)
from mmpeft.models import (PretrainedMismatchError, RepAdapterViT,
                           SimpleFeaturePyramid)
from mmpeft.models.vit import convert_timm_vit

# A small ViT with every optional part on: final norm, patch bias, class
# token, several outputs; inputs of another size than img_size make the
# position table resize at run time.
SMALL = dict(img_size=(32, 32),
             patch_size=8,
             embed_dims=32,
             num_layers=2,
             num_heads=4,
             mlp_ratio=2,
             out_indices=(0, 1),
             final_norm=True,
             patch_bias=True,
             norm_cfg=dict(type='LN', eps=1e-6))
REPADAPTER_CONFIGS = sorted(  # RepAdapterViT's (the dinov2 host's: *_dinov2b_*)
    osp.relpath(p, REPO_ROOT)
    for p in glob.glob(osp.join(REPO_ROOT, 'configs/repadapter/*_vitb_*.py')))


def stock_and_adapter_vit(**kwargs):
    """A stock ViT with random weights and a RepAdapterViT holding them."""
    torch.manual_seed(0)
    stock = VisionTransformer(**SMALL)
    stock.init_weights()
    # Frozen like the PEFT model's: torch runs the attention projections as
    # bmm instead of one mm when the weight does not require grad, equal up
    # to the last float bits.
    stock.requires_grad_(False)
    model = RepAdapterViT(**SMALL, **kwargs)
    model.init_weights()
    missing, unexpected = model.load_state_dict(stock.state_dict(),
                                                strict=False)
    assert not unexpected and set(missing) == set(model.adapter_param_names())
    stock.eval()  # mmseg's VisionTransformer.train() returns None: no chaining
    model.eval()
    return stock, model


def randomise_adapters(model, std=0.2):
    for _, adapter in model.named_adapters():
        for param in adapter.parameters():
            torch.nn.init.normal_(param, std=std)


def relative_error(out, ref):
    return ((out - ref).abs().max() / ref.abs().max()).item()


def test_zero_init_adapters_compute_the_stock_vit():
    stock, model = stock_and_adapter_vit()
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        for ours, theirs in zip(model(x), stock(x)):
            # Packed qkv projection (compat.packed_self_attention): one GEMM
            # where the stock layer runs three, so equal to float rounding.
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_only_adapters_train_and_count():
    model = RepAdapterViT()  # ViT-B/16, paper adapters
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == model.adapter_param_names()
    assert all('_adapter.' in n for n in trainable)
    assert len(list(model.named_adapters())) == 24
    # per adapter: A 768*8 + 8, B 768*4 + 768
    assert sum(p.numel() for n, p in model.named_parameters()
               if p.requires_grad) == 24 * 9992


def test_frozen_weights_unchanged_after_an_optimizer_step():
    _, model = stock_and_adapter_vit()
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(),
                                  lr=1e-2,
                                  weight_decay=0.05)
    loss = sum(out.square().mean() for out in model(torch.randn(2, 3, 32, 32)))
    loss.backward()
    optimizer.step()
    adapters = set(model.adapter_param_names())
    for name, param in model.named_parameters():
        if name in adapters:
            if 'conv_B' in name:  # B gets a gradient from the first step
                assert not torch.equal(param, before[name]), name
        else:
            assert param.grad is None
            assert torch.equal(param, before[name]), name


def test_gradient_checkpointing_reaches_the_adapters():
    _, model = stock_and_adapter_vit(with_cp=True)
    model.train()
    sum(out.sum() for out in model(torch.randn(1, 3, 32, 32))).backward()
    for name, adapter in model.named_adapters():
        assert adapter.conv_B.weight.grad.abs().sum() > 0, name


@pytest.mark.parametrize('groups,scale', [(2, 1.0), (4, 0.3), (1, 4.0)])
def test_merged_equals_unmerged_and_is_a_stock_vit(groups, scale):
    stock, model = stock_and_adapter_vit(
        adapter_cfg=dict(type='RepAdapter', groups=groups, scale=scale))
    randomise_adapters(model, std=0.5)
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        unmerged = model(x)
        for out, ref in zip(unmerged, stock(x)):  # the adapters do act
            assert relative_error(out, ref) > 1e-2
        merged_model = mmpeft.merge_adapters(copy.deepcopy(model))
        merged = merged_model(x)
    for out, ref in zip(merged, unmerged):
        assert relative_error(out, ref) < 1e-4
    assert not list(merged_model.named_adapters())

    state = merged_model.state_dict()
    assert {
        k: v.shape
        for k, v in state.items()
    } == {
        k: v.shape
        for k, v in stock.state_dict().items()
    }
    count = sum(p.numel() for p in merged_model.parameters())
    assert count == sum(p.numel() for p in stock.parameters())
    stock.load_state_dict(state, strict=True)
    with torch.no_grad():
        for out, ref in zip(stock(x), merged):  # stock vs mmpeft code
            assert_close_to_scale(out, ref)


def test_merge_needs_qkv_bias():
    model = RepAdapterViT(**{**SMALL, 'qkv_bias': False})
    with pytest.raises(ValueError, match='qkv_bias=True'):
        model.merge_adapters()


def timm_state_dict(embed_dims=32, depth=2, patch=8, grid=4, hidden=64):
    """Random weights in the key layout of timm's / DeiT's ViT releases."""
    c = embed_dims
    shapes = {
        'cls_token': (1, 1, c),
        'pos_embed': (1, 1 + grid * grid, c),
        'patch_embed.proj.weight': (c, 3, patch, patch),
        'patch_embed.proj.bias': (c, ),
        'norm.weight': (c, ),
        'norm.bias': (c, ),
        'head.weight': (1000, c),
        'head.bias': (1000, ),
    }
    for i in range(depth):
        shapes.update({
            f'blocks.{i}.norm1.weight': (c, ),
            f'blocks.{i}.norm1.bias': (c, ),
            f'blocks.{i}.attn.qkv.weight': (3 * c, c),
            f'blocks.{i}.attn.qkv.bias': (3 * c, ),
            f'blocks.{i}.attn.proj.weight': (c, c),
            f'blocks.{i}.attn.proj.bias': (c, ),
            f'blocks.{i}.norm2.weight': (c, ),
            f'blocks.{i}.norm2.bias': (c, ),
            f'blocks.{i}.mlp.fc1.weight': (hidden, c),
            f'blocks.{i}.mlp.fc1.bias': (hidden, ),
            f'blocks.{i}.mlp.fc2.weight': (c, hidden),
            f'blocks.{i}.mlp.fc2.bias': (c, ),
        })
    torch.manual_seed(1)
    return {k: torch.randn(shape) for k, shape in shapes.items()}


@pytest.mark.parametrize('wrapper', ['state_dict', 'model'])  # timm, DeiT
def test_convert_weights_loads_a_timm_checkpoint(tmp_path, wrapper):
    timm = timm_state_dict()
    path = str(tmp_path / 'vit_timm.pth')
    torch.save({wrapper: timm}, path)
    model = RepAdapterViT(
        **{
            **SMALL, 'img_size': (48, 48)
        },  # 6x6 table from timm's 4x4
        convert_weights=True,
        init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    params = dict(model.named_parameters())
    same = {
        'layers.1.attn.attn.in_proj_weight': 'blocks.1.attn.qkv.weight',
        'layers.1.attn.attn.in_proj_bias': 'blocks.1.attn.qkv.bias',
        'layers.0.attn.attn.out_proj.weight': 'blocks.0.attn.proj.weight',
        'layers.0.ln1.weight': 'blocks.0.norm1.weight',
        'layers.0.ln2.bias': 'blocks.0.norm2.bias',
        'layers.1.ffn.layers.0.0.weight': 'blocks.1.mlp.fc1.weight',
        'layers.1.ffn.layers.1.bias': 'blocks.1.mlp.fc2.bias',
        'patch_embed.projection.weight': 'patch_embed.proj.weight',
        'patch_embed.projection.bias': 'patch_embed.proj.bias',
        'ln1.weight': 'norm.weight',
        'cls_token': 'cls_token',
    }
    for ours, theirs in same.items():
        assert torch.equal(params[ours], timm[theirs]), ours
    assert params['pos_embed'].shape == (1, 1 + 36, 32)
    assert torch.equal(params['pos_embed'][:, 0], timm['pos_embed'][:, 0])
    # every weight is a converted timm weight, resized or not
    stock = VisionTransformer(**{**SMALL, 'img_size': (48, 48)})
    converted = convert_timm_vit(timm)
    converted['pos_embed'] = params['pos_embed']
    stock.load_state_dict(converted, strict=True)
    for name, param in stock.named_parameters():
        assert torch.equal(param, params[name]), name


def test_timm_checkpoint_without_convert_weights_is_a_clear_error(tmp_path):
    path = str(tmp_path / 'vit_timm.pth')
    torch.save({'state_dict': timm_state_dict()}, path)
    model = RepAdapterViT(**SMALL,
                          init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(PretrainedMismatchError, match='convert_weights=True'):
        model.init_weights()


def test_distilled_deit_position_table_is_a_clear_error(tmp_path):
    timm = timm_state_dict()
    timm['pos_embed'] = torch.randn(1, 2 + 16, 32)  # class + distill tokens
    path = str(tmp_path / 'deit_distilled.pth')
    torch.save({'model': timm}, path)
    model = RepAdapterViT(
        **{**SMALL, 'img_size': (48, 48)},
        convert_weights=True,
        init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(PretrainedMismatchError, match='square patch grid'):
        model.init_weights()


def test_convert_tool_feeds_the_stock_vit(tmp_path, monkeypatch):
    src, dst = str(tmp_path / 'timm.pth'), str(tmp_path / 'out/mmseg.pth')
    timm = timm_state_dict(grid=4)
    torch.save({'state_dict': timm}, src)
    monkeypatch.setattr(sys, 'argv', ['convert_timm_vit.py', src, dst])
    load_tool('convert_timm_vit').main()
    converted = torch.load(dst)
    assert list(convert_timm_vit(converted)) == list(converted)  # idempotent
    stock = VisionTransformer(**SMALL)  # 32 / 8: the 4x4 table of timm
    stock.load_state_dict(converted, strict=True)


def test_simple_feature_pyramid_shapes():
    neck = SimpleFeaturePyramid(in_channels=32)
    outs = neck((torch.randn(2, 32, 6, 10), ))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 24, 40), (2, 32, 12, 20),
                                              (2, 32, 6, 10), (2, 32, 3, 5)]
    maps = tuple(torch.randn(1, 32, 6, 6) for _ in range(4))  # one per level
    outs = neck(maps)
    assert torch.equal(outs[2], maps[2])
    assert [o.shape[-1] for o in outs] == [24, 12, 6, 3]
    with pytest.raises(ValueError, match='one per scale factor'):
        neck(maps[:2])
    with pytest.raises(ValueError, match='in_channels'):
        neck((torch.randn(1, 16, 6, 6), ))
    with pytest.raises(ValueError, match='power of'):
        SimpleFeaturePyramid(32, scale_factors=(3, 1))


@pytest.mark.parametrize('in_stride,stride', [(14, 16), (7, 8)])
def test_simple_feature_pyramid_resizes_a_patch_14_map(in_stride, stride):
    """A stride-14 (7) map of an image padded to 32 (mmcv's PatchEmbed
    pads it to a multiple of 14 first) becomes exactly H / 16 (8) by W / 16
    (8) before the pyramid: its outputs are at strides 4 / 8 / 16 / 32."""
    factors = (stride / 4, stride / 8, stride / 16, stride / 32)
    neck = SimpleFeaturePyramid(in_channels=8, in_stride=in_stride,
                                scale_factors=factors)
    for h, w in ((800, 1216), (1024, 1024), (192, 256)):
        grid = (math.ceil(h / in_stride), math.ceil(w / in_stride))
        x = torch.randn(1, 8, *grid)
        outs = neck((x, ))
        assert [tuple(o.shape[-2:]) for o in outs] == [
            (h // s, w // s) for s in (4, 8, 16, 32)]
        size = (h // stride, w // stride)
        torch.testing.assert_close(
            outs[factors.index(1.0)],
            F.interpolate(x, size=size, mode='bilinear', align_corners=False))


def test_simple_feature_pyramid_then_stock_fpn_in_mmdet():
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    neck = MODELS.build([
        dict(type='SimpleFeaturePyramid', in_channels=32),
        dict(type='FPN', in_channels=[32] * 4, out_channels=16, num_outs=5)
    ])
    outs = neck((torch.randn(1, 32, 8, 8), ))  # stride 16 of a 128 image
    assert [tuple(o.shape[-2:]) for o in outs] == [(32, 32), (16, 16), (8, 8),
                                                   (4, 4), (2, 2)]


_LOAD_WITHOUT_MMPEFT = '''
import json, sys, torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
cfg = Config.fromfile(sys.argv[1])
assert 'custom_imports' not in cfg
cfg.merge_from_dict(json.loads(sys.argv[5]))
init_default_scope(cfg.default_scope)
from mmseg.registry import MODELS
model = MODELS.build(cfg.model).eval()
load_checkpoint(model, sys.argv[2], map_location='cpu', strict=True)
assert not [m for m in sys.modules if m.startswith('mmpeft')]
assert type(model.backbone).__name__ == 'VisionTransformer'
with torch.no_grad():
    torch.save(model._forward(torch.load(sys.argv[3])), sys.argv[4])
'''

# Both configs get 4 ViT-B layers and 64-channel heads: the same check on a
# checkpoint of 120 MB instead of 580 MB.
_THINNER = {
    'model.backbone.num_layers': 4,
    'model.backbone.out_indices': [0, 1, 2, 3],
    'model.neck.out_channels': 64,
    'model.decode_head.in_channels': [64] * 4,
    'model.decode_head.channels': 64,
    'model.auxiliary_head.in_channels': 64,
    'model.auxiliary_head.channels': 64,
}


def test_merged_checkpoint_loads_into_the_stock_config(tmp_path):
    """Train-side config RepAdapter UperNet -> merge -> the baseline config,
    in a process that never imports mmpeft, computes the same logits."""
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs/repadapter/upernet_vitb_ade20k.py'))
    cfg.merge_from_dict(_THINNER)
    cfg.model.backbone.init_cfg = None
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    randomise_adapters(model.backbone, std=0.05)
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        unmerged = model._forward(x)
        mmpeft.merge_adapters(model)
        assert relative_error(model._forward(x), unmerged) < 1e-4
    paths = [str(tmp_path / n) for n in ('merged.pth', 'x.pth', 'out.pth')]
    torch.save({'state_dict': model.state_dict()}, paths[0])
    torch.save(x, paths[1])
    baseline = osp.join(REPO_ROOT, 'configs/baselines/upernet_vitb_ade20k.py')
    subprocess.run([
        sys.executable, '-c', _LOAD_WITHOUT_MMPEFT, baseline, *paths,
        json.dumps(_THINNER)
    ],
                   check=True,
                   cwd=str(tmp_path))
    assert relative_error(torch.load(paths[2]), unmerged) < 1e-4


class FrozenBackboneCheck(Hook):
    """Snapshots the backbone when training starts and checks, at the end,
    that only adapter weights moved (and what the config's policy trains:
    the backbone biases of the UperNet recipe)."""

    def before_train(self, runner):
        self.before = {
            n: p.detach().clone()
            for n, p in runner.model.backbone.named_parameters()
        }
        self.policy_trains = {
            n
            for n, p in runner.model.backbone.named_parameters()
            if p.requires_grad
        }

    def after_train(self, runner):
        backbone = runner.model.backbone
        adapters = set(backbone.adapter_param_names())
        moved = {
            n
            for n, p in backbone.named_parameters()
            if not torch.equal(p, self.before[n])
        }
        self.frozen_moved = sorted(moved - adapters - self.policy_trains)
        self.adapters_moved = len(moved & adapters)


def test_all_four_tasks_have_a_repadapter_config():
    assert REPADAPTER_CONFIGS == [
        'configs/repadapter/fasterrcnn_vitb_voc.py',
        'configs/repadapter/maskrcnn_vitb_coco.py',
        'configs/repadapter/orientedrcnn_vitb_dota.py',
        'configs/repadapter/upernet_vitb_ade20k.py'
    ]


@pytest.mark.slow
@pytest.mark.parametrize('config', REPADAPTER_CONFIGS)
def test_one_training_step(config, demo_data, tmp_path):
    cfg = tiny_runner_cfg(osp.join(REPO_ROOT, config), demo_data, tmp_path)
    assert cfg.model.backbone.type == 'RepAdapterViT'
    runner = Runner.from_cfg(cfg)
    check = FrozenBackboneCheck()
    runner.register_hook(check)
    runner.train()
    assert check.frozen_moved == []
    assert check.adapters_moved > 0
