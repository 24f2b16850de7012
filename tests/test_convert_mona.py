"""tools/convert_mona_official.py on checkpoints written in the layout of the
official Mona code (Microsoft's Swin in mmdet 2.x, ``my_module_{1,2}``
adapters), random values: strict loading into a Mask R-CNN and into a bare
MonaSwinTransformer, every value in its place."""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope

from helpers import REPO_ROOT, load_tool
from mmpeft.models import MonaSwinTransformer

convert_tool = load_tool('convert_mona_official')

TINY = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
WINDOW = 7
# Official (Microsoft / mmdet 2.x) name -> mmdet 3 name, inside a block.
BLOCK_KEYS = {
    'norm1': 'norm1',
    'attn.relative_position_bias_table':
    'attn.w_msa.relative_position_bias_table',
    'attn.relative_position_index': 'attn.w_msa.relative_position_index',
    'attn.qkv': 'attn.w_msa.qkv',
    'attn.proj': 'attn.w_msa.proj',
    'norm2': 'norm2',
    'mlp.fc1': 'ffn.layers.0.0',
    'mlp.fc2': 'ffn.layers.1',
    'my_module_1': 'attn_adapter',
    'my_module_2': 'ffn_adapter',
}


def official_mona_backbone(embed_dims, depths, num_heads, seed=0):
    """Random backbone weights named as ``SwinTransformer_mona`` of the
    official Mona code names them (no ``backbone.`` prefix)."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator)

    def linear(name, out_dim, in_dim, bias=True):
        return {f'{name}.weight': rand(out_dim, in_dim),
                **({f'{name}.bias': rand(out_dim)} if bias else {})}

    def mona(name, c):
        sd = {f'{name}.{p}': rand(c) for p in ('norm.weight', 'norm.bias',
                                                'gamma', 'gammax')}
        sd.update(linear(f'{name}.project1', 64, c))
        sd.update(linear(f'{name}.project2', c, 64))
        for conv, k in (('conv1', 3), ('conv2', 5), ('conv3', 7)):
            sd[f'{name}.adapter_conv.{conv}.weight'] = rand(64, 1, k, k)
            sd[f'{name}.adapter_conv.{conv}.bias'] = rand(64)
        sd[f'{name}.adapter_conv.projector.weight'] = rand(64, 64, 1, 1)
        sd[f'{name}.adapter_conv.projector.bias'] = rand(64)
        return sd

    area = WINDOW * WINDOW
    sd = {
        'patch_embed.proj.weight': rand(embed_dims, 3, 4, 4),
        'patch_embed.proj.bias': rand(embed_dims),
        'patch_embed.norm.weight': rand(embed_dims),
        'patch_embed.norm.bias': rand(embed_dims),
    }
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        c = embed_dims * 2**i
        for j in range(depth):
            p = f'layers.{i}.blocks.{j}.'
            sd.update({p + 'norm1.weight': rand(c), p + 'norm1.bias': rand(c),
                       p + 'norm2.weight': rand(c), p + 'norm2.bias': rand(c)})
            sd[p + 'attn.relative_position_bias_table'] = rand(
                (2 * WINDOW - 1)**2, heads)
            sd[p + 'attn.relative_position_index'] = torch.randint(
                0, (2 * WINDOW - 1)**2, (area, area), generator=generator)
            sd.update(linear(p + 'attn.qkv', 3 * c, c))
            sd.update(linear(p + 'attn.proj', c, c))
            sd.update(linear(p + 'mlp.fc1', 4 * c, c))
            sd.update(linear(p + 'mlp.fc2', c, 4 * c))
            sd.update(mona(p + 'my_module_1', c))
            sd.update(mona(p + 'my_module_2', c))
        if i < len(depths) - 1:
            p = f'layers.{i}.downsample.'
            sd.update(linear(p + 'reduction', 2 * c, 4 * c, bias=False))
            sd.update({p + 'norm.weight': rand(4 * c),
                       p + 'norm.bias': rand(4 * c)})
        sd.update({f'norm{i}.weight': rand(c), f'norm{i}.bias': rand(c)})
    return sd


def expected_name(official):
    """Where an official backbone key must land (bare backbone names)."""
    if official.startswith('patch_embed.proj.'):
        return official.replace('patch_embed.proj.', 'patch_embed.projection.')
    if not official.startswith('layers.'):
        return official
    parts = official.split('.')
    prefix = f'stages.{parts[1]}.'
    if parts[2] == 'downsample':
        return prefix + '.'.join(parts[2:])
    rest = '.'.join(parts[4:])
    for old, new in BLOCK_KEYS.items():
        if rest == old or rest.startswith(old + '.'):
            return f'{prefix}blocks.{parts[3]}.{new}{rest[len(old):]}'
    raise KeyError(official)


def official_patch_merging(x, hw_shape, norm_weight, norm_bias, reduction):
    """Microsoft's PatchMerging: 2x2 neighbours concatenated as
    (0,0), (1,0), (0,1), (1,1), LayerNorm, then the reduction."""
    b, _, c = x.shape
    h, w = hw_shape
    x = F.pad(x.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
    x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
                   x[:, 1::2, 1::2]], -1).view(b, -1, 4 * c)
    x = F.layer_norm(x, (4 * c, ), norm_weight, norm_bias)
    return F.linear(x, reduction)


def tiny_mask_rcnn():
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs/mona/maskrcnn_swinb_coco.py'))
    cfg.model.backbone.update(TINY, init_cfg=None, convert_weights=False)
    cfg.model.neck.in_channels = [32, 64, 128, 256]
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    return MODELS.build(cfg.model)


def check_backbone(state, official, prefix=''):
    """Every official backbone value, in its mmdet 3 place."""
    for key, value in official.items():
        if '.downsample.' in key:
            continue  # channel order changes: checked as a function below
        assert torch.equal(state[prefix + expected_name(key)], value), key


def check_patch_merging(backbone, official):
    for i, stage in enumerate(backbone.stages[:-1]):
        p = f'layers.{i}.downsample.'
        c = TINY['embed_dims'] * 2**i
        hw_shape = (7, 9)
        x = torch.randn(2, 63, c)
        expected = official_patch_merging(
            x, hw_shape, official[p + 'norm.weight'],
            official[p + 'norm.bias'], official[p + 'reduction.weight'])
        with torch.no_grad():
            out, out_hw = stage.downsample(x, hw_shape)
        assert tuple(out_hw) == (4, 5)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_whole_detector_checkpoint(tmp_path):
    detector = tiny_mask_rcnn()
    official = official_mona_backbone(**TINY)
    generator = torch.Generator().manual_seed(1)
    # Neck and heads: mmdet 2.x names them as mmdet 3 does.
    others = {k: torch.randn(v.shape, generator=generator)
              for k, v in detector.state_dict().items()
              if not k.startswith('backbone.')}
    torch.save(
        dict(state_dict={**{'backbone.' + k: v for k, v in official.items()},
                         **others},
             meta=dict(CLASSES=['a', 'b'], mmdet_version='2.11.0')),
        tmp_path / 'official.pth')
    convert_tool.main([str(tmp_path / 'official.pth'),
                       str(tmp_path / 'mmpeft.pth')])
    converted = torch.load(tmp_path / 'mmpeft.pth')
    assert converted['meta']['dataset_meta'] == dict(classes=('a', 'b'))
    detector.load_state_dict(converted['state_dict'], strict=True)
    state = detector.state_dict()
    check_backbone(state, official, prefix='backbone.')
    check_patch_merging(detector.backbone, official)
    for key, value in others.items():
        assert torch.equal(state[key], value), key


def test_bare_backbone_checkpoint():
    official = official_mona_backbone(**TINY, seed=2)
    backbone = MonaSwinTransformer(**TINY)
    backbone.load_state_dict(
        convert_tool.convert_mona_official(official), strict=True)
    check_backbone(backbone.state_dict(), official)
    check_patch_merging(backbone, official)


def test_checkpoint_without_mona_is_refused():
    official = {k: v for k, v in official_mona_backbone(**TINY).items()
                if 'my_module' not in k}
    with pytest.raises(ValueError, match='convert_weights=True'):
        convert_tool.convert_mona_official(official)
