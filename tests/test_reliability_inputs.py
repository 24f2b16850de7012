"""Bad input gets an error that names the problem and the fix, and nothing
is lost: hw_shape vs tokens, tiny images, mismatching pretrained
checkpoints, adapter files on the wrong base or method, deploy files given
to --resume, unknown adapters, unreachable MiMi targets. (NaN losses:
test_reliability_nan_guard.py.)"""
import logging
import math
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.logging import MMLogger
from mmengine.registry import MODELS
from mmengine.runner import Runner
from torch import nn

from helpers import assert_close_to_scale, load_tool
from mmpeft.adapters import MiMiAdapter, Mona, RepAdapter
from mmpeft.engine import (AdapterCheckpointError, MiMiPruneHook,
                           NotResumableError, adapter_checkpoint,
                           load_adapter_checkpoint)
from mmpeft.engine.export import save_atomic
from mmpeft.models import PretrainedMismatchError
from test_reliability_support import (TINY_SWIN, add_custom_hooks,
                                      tiny_method_cfg)

TINY_VIT = dict(
    embed_dims=64, num_layers=2, num_heads=2, img_size=(64, 64),
    patch_bias=True, final_norm=True)
BACKBONES = dict(
    mona=dict(type='MonaSwinTransformer', **TINY_SWIN),
    mimi=dict(type='MiMiSwin', **TINY_SWIN),
    repadapter=dict(type='RepAdapterViT', **TINY_VIT))


def build(method, **kwargs):
    return MODELS.build(dict(BACKBONES[method], **kwargs))


# ------------------------------------------------------------ hw_shape
def test_spatial_adapter_rejects_hw_shape_not_matching_tokens():
    with pytest.raises(ValueError) as error:
        Mona(32)(torch.randn(2, 12, 32), (3, 5))
    message = str(error.value)
    assert 'shape (2, 12, 32) with hw_shape (3, 5)' in message
    assert '(B, 15, C)' in message
    assert 'unpadded (H, W)' in message and 'class tokens' in message


@pytest.mark.parametrize('adapter', [RepAdapter(32), MiMiAdapter(32, 8)])
def test_token_wise_adapters_do_not_use_hw_shape(adapter):
    adapter.eval()
    x = torch.randn(2, 12, 32)
    assert torch.equal(adapter(x, (3, 5)), adapter(x, (3, 4)))


@pytest.mark.parametrize('method', ['mona', 'mimi'])
def test_swin_block_rejects_hw_shape_not_matching_tokens(method):
    block = build(method).stages[0].blocks[0]
    with pytest.raises(ValueError, match=r'hw_shape \(3, 5\).*\(B, 15, C\)'):
        block(torch.randn(1, 12, 32), (3, 5))


# ------------------------------------------------- smaller than a patch
@pytest.mark.parametrize('method', list(BACKBONES))
@pytest.mark.parametrize('size', [(2, 3), (9, 30)])
def test_image_smaller_than_a_patch_or_window(method, size):
    """Stock Swin / ViT pad to the patch and the window; the adapters see
    the unpadded maps, and adapters still get gradients."""
    model = build(method)
    h, w = size
    outputs = model(torch.randn(1, 3, h, w))
    if method == 'repadapter':  # one stride-16 map, padded at the corner
        expected = [(64, math.ceil(h / 16), math.ceil(w / 16))]
    else:  # stride 4, then halving with rounding up
        expected, h, w = [], math.ceil(h / 4), math.ceil(w / 4)
        for width in (32, 64, 128, 256):
            expected.append((width, h, w))
            h, w = math.ceil(h / 2), math.ceil(w / 2)
    assert [tuple(o.shape[1:]) for o in outputs] == expected
    sum(o.sum() for o in outputs).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.isfinite().all() for g in grads)


def test_mona_on_tiny_image_is_stock_swin_when_adapters_are_identity():
    model = build('mona')
    with torch.no_grad():
        for _, adapter in model.named_adapters():
            adapter.project2.weight.zero_()
            adapter.project2.bias.zero_()
    stock = MODELS.build(dict(type='mmdet.SwinTransformer', **TINY_SWIN))
    stock.load_state_dict(model.state_dict(), strict=False)
    model.eval()
    stock.eval()
    x = torch.randn(1, 3, 6, 10)
    for ours, theirs in zip(model(x), stock(x)):
        assert_close_to_scale(ours, theirs)


# ------------------------------------------------ pretrained checkpoints
def swin_checkpoint():
    """A checkpoint in mmdet's layout (``backbone.`` keys), random values."""
    swin = MODELS.build(dict(type='mmdet.SwinTransformer', **TINY_SWIN))
    return {f'backbone.{k}': v for k, v in swin.state_dict().items()}


def timm_vit_checkpoint():
    """A timm ViT release (``blocks.*`` keys, classifier head), random."""
    c, n = TINY_VIT['embed_dims'], TINY_VIT['num_layers']
    grid = TINY_VIT['img_size'][0] // 16
    shapes = {
        'cls_token': (1, 1, c),
        'pos_embed': (1, 1 + grid * grid, c),
        'patch_embed.proj.weight': (c, 3, 16, 16),
        'patch_embed.proj.bias': (c, ),
        'norm.weight': (c, ),
        'norm.bias': (c, ),
        'head.weight': (1000, c),
        'head.bias': (1000, ),
    }
    for i in range(n):
        shapes.update({
            f'blocks.{i}.norm1.weight': (c, ),
            f'blocks.{i}.norm1.bias': (c, ),
            f'blocks.{i}.attn.qkv.weight': (3 * c, c),
            f'blocks.{i}.attn.qkv.bias': (3 * c, ),
            f'blocks.{i}.attn.proj.weight': (c, c),
            f'blocks.{i}.attn.proj.bias': (c, ),
            f'blocks.{i}.norm2.weight': (c, ),
            f'blocks.{i}.norm2.bias': (c, ),
            f'blocks.{i}.mlp.fc1.weight': (4 * c, c),
            f'blocks.{i}.mlp.fc1.bias': (4 * c, ),
            f'blocks.{i}.mlp.fc2.weight': (c, 4 * c),
            f'blocks.{i}.mlp.fc2.bias': (c, ),
        })
    return {k: torch.randn(shape) for k, shape in shapes.items()}


# method -> (checkpoint, backbone kwargs, a checkpoint key and the model key
# it loads into, a wrong shape for it)
PRETRAINED = dict(
    mona=(swin_checkpoint, dict(convert_weights=False),
          'backbone.stages.1.blocks.0.ffn.layers.1.weight',
          'stages.1.blocks.0.ffn.layers.1.weight', (64, 128)),
    mimi=(swin_checkpoint, dict(convert_weights=False),
          'backbone.stages.2.blocks.1.attn.w_msa.qkv.weight',
          'stages.2.blocks.1.attn.w_msa.qkv.weight', (384, 64)),
    repadapter=(timm_vit_checkpoint, dict(convert_weights=True),
                'blocks.1.mlp.fc2.weight', 'layers.1.ffn.layers.1.weight',
                (64, 128)))


def pretrained_backbone(method, state, tmp_path):
    path = str(tmp_path / 'pretrained.pth')
    torch.save(dict(state_dict=state), path)
    _, kwargs, *_ = PRETRAINED[method]
    # ConfigDict as from a config file (mmdet's Swin reads init_cfg.checkpoint)
    init_cfg = ConfigDict(type='Pretrained', checkpoint=path)
    return build(method, init_cfg=init_cfg, **kwargs), path


class Warnings(logging.Handler):
    """Collects the warnings of the current MMLogger."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize('method', list(PRETRAINED))
def test_complete_pretrained_checkpoint_loads_every_frozen_weight(
        method, tmp_path):
    make, _, key, model_key, _ = PRETRAINED[method]
    state = make()
    model, _ = pretrained_backbone(method, state, tmp_path)
    model.init_weights()
    assert torch.equal(dict(model.named_parameters())[model_key], state[key])


@pytest.mark.parametrize('method', list(PRETRAINED))
def test_pretrained_checkpoint_missing_a_key(method, tmp_path):
    make, _, key, model_key, _ = PRETRAINED[method]
    state = make()
    del state[key]
    model, path = pretrained_backbone(method, state, tmp_path)
    with pytest.raises(PretrainedMismatchError) as error:
        model.init_weights()
    message = str(error.value)
    assert path in message and f'missing (1): {model_key}' in message
    assert 'would stay random' in message and 'Fix:' in message


@pytest.mark.parametrize('method', list(PRETRAINED))
def test_pretrained_checkpoint_with_a_wrong_shape(method, tmp_path):
    make, _, key, model_key, shape = PRETRAINED[method]
    state = make()
    expected = tuple(state[key].shape)
    state[key] = torch.zeros(shape)
    model, _ = pretrained_backbone(method, state, tmp_path)
    with pytest.raises(PretrainedMismatchError) as error:
        model.init_weights()
    message = str(error.value)
    assert 'wrong shape' in message and model_key in message
    for size in (shape, expected):  # "(64, 128)" or "torch.Size([64, 128])"
        assert ', '.join(map(str, size)) in message
    assert 'Fix: use a checkpoint of this architecture' in message


@pytest.mark.parametrize('method', list(PRETRAINED))
def test_pretrained_checkpoint_with_extra_keys_warns_naming_them(
        method, tmp_path):
    make, _, key, model_key, _ = PRETRAINED[method]
    state = make()
    extra = key.replace('weight', 'extra_scale')
    state[extra] = torch.ones(3)
    model, _ = pretrained_backbone(method, state, tmp_path)
    warnings = Warnings()
    logger = MMLogger.get_current_instance()
    logger.addHandler(warnings)
    try:
        model.init_weights()  # loads: an extra key is no error
    finally:
        logger.removeHandler(warnings)
    assert torch.equal(dict(model.named_parameters())[model_key], state[key])
    ignored = model_key.replace('weight', 'extra_scale')
    assert any('no place in the backbone' in m and ignored in m
               for m in warnings.messages), warnings.messages


# ------------------------------------------------- adapter-only files
class Detector(nn.Module):
    """The part of a detector the adapter files care about."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(4, 2)


def trained(method, seed=0, **kwargs):
    """A backbone whose adapters moved off their init (frozen: ``seed``)."""
    torch.manual_seed(seed)
    model = Detector(build(method, **kwargs))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.01)
    return model


@pytest.mark.parametrize('method', list(BACKBONES))
def test_adapter_file_on_the_wrong_base(method, tmp_path):
    path = str(tmp_path / 'adapters.pth')
    save_atomic(adapter_checkpoint(trained(method)), path)
    other_base = trained(method, seed=1)
    before = {k: v.clone() for k, v in other_base.state_dict().items()}
    with pytest.raises(AdapterCheckpointError) as error:
        load_adapter_checkpoint(other_base, path)
    assert 'Wrong base checkpoint' in str(error.value)
    assert 'load that base checkpoint' in str(error.value)
    after = other_base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # untouched
    assert load_adapter_checkpoint(trained(method), path)  # the right base


@pytest.mark.parametrize('method,other', [('mona', 'mimi'),
                                          ('mimi', 'repadapter'),
                                          ('repadapter', 'mona')])
def test_adapter_file_of_another_method(method, other, tmp_path):
    path = str(tmp_path / 'adapters.pth')
    save_atomic(adapter_checkpoint(trained(method)), path)
    with pytest.raises(AdapterCheckpointError) as error:
        load_adapter_checkpoint(trained(other), path)
    message = str(error.value)
    assert 'method (backbone type)' in message
    assert 'Use the config the adapters were trained with' in message


def test_adapter_file_with_another_adapter_cfg(tmp_path):
    path = str(tmp_path / 'adapters.pth')
    save_atomic(adapter_checkpoint(trained('mona')), path)
    narrower = trained('mona', adapter_cfg=dict(type='Mona', inner_dim=32))
    with pytest.raises(AdapterCheckpointError, match='adapter_cfg'):
        load_adapter_checkpoint(narrower, path)


# --------------------------------------- deploy files given to --resume
@pytest.fixture(scope='module')
def exported_run(demo_data, tmp_path_factory):
    """A one-iteration Mona run with its deploy and adapter-only files
    (the config's own AdapterMergeHook)."""
    work_dir = tmp_path_factory.mktemp('exported')
    cfg = tiny_method_cfg('mona', demo_data, work_dir, max_iters=1)
    Runner.from_cfg(cfg).train()
    config = str(work_dir / 'config.py')
    cfg.dump(config)
    return cfg, config, work_dir


@pytest.mark.parametrize('kind,what', [('deploy', 'a deploy checkpoint'),
                                       ('adapters',
                                        'an adapter-only checkpoint')])
def test_runner_refuses_to_resume_from_an_export(kind, what, exported_run):
    cfg, _, work_dir = exported_run
    cfg = add_custom_hooks(cfg.copy(), dict(type='ExactResumeHook'))
    cfg.work_dir = str(work_dir / f'resume_{kind}')
    cfg.experiment_name = f'resume_{kind}'
    cfg.resume = True
    cfg.load_from = str(work_dir / f'iter_1_{kind}.pth')
    runner = Runner.from_cfg(cfg)
    with pytest.raises(NotResumableError) as error:
        runner.train()
    message = str(error.value)
    assert f'{cfg.load_from} is {what}' in message
    assert f'--resume {work_dir / "iter_1.pth"}' in message


@pytest.mark.parametrize('kind,what', [
    ('deploy', 'is a deploy checkpoint'),
    ('adapters', 'is an adapter-only checkpoint'),
    ('pretrained', 'is not a training checkpoint'),
])
def test_train_tool_refuses_to_resume_from_a_non_training_file(
        kind, what, exported_run, monkeypatch, tmp_path):
    _, config, work_dir = exported_run
    path = str(work_dir / f'iter_1_{kind}.pth')
    if kind == 'pretrained':
        path = str(tmp_path / 'swin_pretrained.pth')
        torch.save(dict(state_dict=swin_checkpoint()), path)
    monkeypatch.setenv('LOCAL_RANK', '0')  # else train.py sets it for good
    monkeypatch.setattr(sys, 'argv', [
        'train.py', config, '--resume', path, '--work-dir',
        str(tmp_path / 'work')
    ])
    with pytest.raises(NotResumableError) as error:
        load_tool('train').main()
    message = str(error.value)
    assert f'{path} {what}' in message
    if kind == 'pretrained':
        assert f'load_from={path}' in message and 'without --resume' in message
    else:
        assert f'--resume {work_dir / "iter_1.pth"}' in message
    assert not osp.exists(tmp_path / 'work')  # stopped before anything ran


# ------------------------------------------------------- configuration
@pytest.mark.parametrize('method', ['mona', 'repadapter'])
def test_unknown_adapter_type(method):
    with pytest.raises(KeyError) as error:
        build(method, adapter_cfg=dict(type='Monna'))
    message = str(error.value)
    assert "unknown adapter type 'Monna'" in message
    assert "'Mona'" in message and "'RepAdapter'" in message
    assert 'register_adapter' in message


def test_mimi_takes_no_adapter_cfg():
    with pytest.raises(TypeError, match='set size_adapters .or sigma0. / adapter_widths'):
        build('mimi', adapter_cfg=dict(type='Mona'))


def test_mimi_sigma0_wider_than_a_stage():
    with pytest.raises(ValueError, match='use sigma0 <= 32'):
        build('mimi', sigma0=64)


def mimi_plan(sigma_target):
    adapters = [a for _, a in build('mimi').named_slots()]
    return MiMiPruneHook(sigma_target=sigma_target).plan(
        [a.in_dim for a in adapters], [a.hidden_dim for a in adapters])


def test_mimi_target_beyond_one_neuron_left():
    # 2 slots per block, depths 1/1/2/1 at widths 32/64/128/256: sum C = 1216
    with pytest.raises(ValueError) as error:
        mimi_plan(2000)
    message = str(error.value)
    assert 'would remove every neuron' in message
    assert 'largest compression with one neuron left is 1216' in message
    assert 'Lower sigma_target' in message


def test_mimi_target_already_met_by_sigma0():
    with pytest.raises(ValueError, match='already met before pruning.*raise '
                       'sigma_target above sigma0'):
        mimi_plan(3)


def test_mimi_target_out_of_reach_of_the_schedule(demo_data, tmp_path):
    # sigma0 = 4 -> 64 at rho 0.5 takes 4 rounds; 2 iterations fit 2.
    cfg = tiny_method_cfg('mimi', demo_data, tmp_path, max_iters=2,
                          mimi_sigma_target=64, mimi_interval=1)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError) as error:
        runner.train()
    message = str(error.value)
    assert 'takes 4 rounds' in message and 'fits only 2 more' in message
    assert 'Lower interval or sigma_target, raise rho, or train longer' \
        in message
    assert not osp.exists(tmp_path / 'iter_1.pth')
