"""MonaSwinTransformer: stock Swin plus Mona in the official places, frozen
pretrained weights, gradient checkpointing, pretrained loading that cannot
fail silently, and one training step of each of the four Mona configs."""
import os.path as osp

import pytest
import torch
from mmdet.models.backbones import SwinTransformer
from mmdet.models.backbones.swin import swin_converter
from mmengine.config import ConfigDict
from mmengine.hooks import Hook
from mmengine.runner import Runner

from helpers import REPO_ROOT, assert_close_to_scale, tiny_runner_cfg
from mmpeft.adapters import Mona
from mmpeft.models import MonaSwinTransformer, PretrainedMismatchError

TINY = dict(
    embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
    window_size=7, drop_path_rate=0.1)
SWIN_B = dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
SWIN_L = dict(embed_dims=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))
# Input size -> the unpadded token map of each stage (patch 4, then halving
# with rounding up: Swin pads odd maps before windows and patch merging).
ODD_INPUTS = {
    (511, 511): [(128, 128), (64, 64), (32, 32), (16, 16)],
    (112, 137): [(28, 35), (14, 18), (7, 9), (4, 5)],
}


def adapter_params(model):
    return {n for n, p in model.named_parameters() if '_adapter.' in n}


def randomize_adapters(model, std=0.02, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if '_adapter.' in name:
                param.add_(torch.randn(param.shape, generator=generator) * std)
    return model


def mona_with_stock_weights(**cfg):
    """(stock Swin, Mona Swin) with the same Swin weights."""
    cfg = {**TINY, **cfg}
    torch.manual_seed(0)
    stock = SwinTransformer(**cfg)
    stock.init_weights()
    mona = MonaSwinTransformer(**cfg)
    missing, unexpected = mona.load_state_dict(
        stock.state_dict(), strict=False)
    assert not unexpected and set(missing) == adapter_params(mona)
    return stock, mona


def test_mona_in_every_block_slot():
    model = MonaSwinTransformer(**TINY)
    for stage in model.stages:
        width = stage.blocks[0].norm1.normalized_shape[0]
        for block in stage.blocks:
            for adapter in (block.attn_adapter, block.ffn_adapter):
                assert isinstance(adapter, Mona)
                assert adapter.project1.weight.shape == (64, width)


@pytest.mark.parametrize('img_shape', list(ODD_INPUTS))
def test_zero_adapters_compute_stock_swin(img_shape):
    stock, mona = mona_with_stock_weights(drop_path_rate=0.0)
    with torch.no_grad():
        for _, adapter in mona.named_adapters():
            adapter.project2.weight.zero_()
            adapter.project2.bias.zero_()
    x = torch.randn(1, 3, *img_shape)
    # eval, then train (adapter dropout active) on the smaller input
    for mode in (False, True)[:1 if img_shape == (511, 511) else 2]:
        stock.train(mode)
        mona.train(mode)
        with torch.no_grad():
            expected, outs = stock(x), mona(x)
        assert len(outs) == len(expected) == 4
        for out, ref in zip(outs, expected):
            assert_close_to_scale(out, ref)


@pytest.mark.parametrize('img_shape', list(ODD_INPUTS))
def test_adapters_see_unpadded_maps_after_each_residual(img_shape):
    """Per block: attn_adapter(x + attn(norm1(x))), then
    ffn_adapter(ffn(norm2(a), identity=a)); the adapters see the stage's
    unpadded (H, W), and their output is the block's output."""
    _, mona = mona_with_stock_weights()
    randomize_adapters(mona).eval()
    calls = {}

    def record(name):

        def hook(module, args, output):
            calls[name] = (args, output)

        return hook

    for i, stage in enumerate(mona.stages):
        for j, block in enumerate(stage.blocks):
            for part in ('attn_adapter', 'ffn_adapter'):
                getattr(block, part).register_forward_hook(
                    record(f'{i}.{j}.{part}'))
            block.register_forward_hook(record(f'{i}.{j}'))
    with torch.no_grad():
        mona(torch.randn(1, 3, *img_shape))
        for i, stage in enumerate(mona.stages):
            for j, block in enumerate(stage.blocks):
                (x, hw_shape), out = calls[f'{i}.{j}']
                (attn_in, attn_hw), attn_out = calls[f'{i}.{j}.attn_adapter']
                (ffn_in, ffn_hw), ffn_out = calls[f'{i}.{j}.ffn_adapter']
                assert tuple(hw_shape) == ODD_INPUTS[img_shape][i]
                assert attn_hw == ffn_hw == hw_shape
                assert torch.equal(attn_in,
                                   block.attn(block.norm1(x), hw_shape) + x)
                assert torch.equal(
                    ffn_in, block.ffn(block.norm2(attn_out),
                                      identity=attn_out))
                assert torch.equal(out, ffn_out)
                assert not torch.equal(attn_out, attn_in)


def test_only_adapters_train():
    model = MonaSwinTransformer(**TINY)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == adapter_params(model)
    widths = [32] * 2 + [64] * 2 + [128] * 2 + [256] * 2  # per block
    assert sum(p.numel() for n, p in model.named_parameters()
               if n in trainable) == sum(2 * (133 * c + 9728) for c in widths)


@pytest.mark.parametrize('arch, expected', [
    (SWIN_B, 3_667_456),
    pytest.param(SWIN_L, 5_267_712, marks=pytest.mark.slow),
])
def test_trainable_parameters_of_the_paper_backbones(arch, expected):
    model = MonaSwinTransformer(**arch)
    assert sum(p.numel() for p in model.parameters()
               if p.requires_grad) == expected


def test_adamw_step_changes_adapters_only():
    _, model = mona_with_stock_weights()
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-3, weight_decay=0.05)
    for _ in range(2):  # project2 starts near 0: step 2 moves everything
        optimizer.zero_grad()
        sum(out.square().mean() for out in model(torch.randn(
            1, 3, 64, 64))).backward()
        optimizer.step()
    changed = {n for n, p in model.named_parameters()
               if not torch.equal(p, before[n])}
    assert changed == adapter_params(model)


def test_with_cp_gradients_match():
    """Non-reentrant checkpointing: the frozen patch embedding gives the
    first block an input that does not require grad, and the adapters inside
    still get the same gradients as without checkpointing."""
    _, plain = mona_with_stock_weights()
    checkpointed = MonaSwinTransformer(**TINY, with_cp=True)
    randomize_adapters(plain)
    checkpointed.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(1, 3, 75, 91)
    grads = []
    for model in (plain, checkpointed):
        model.train()
        torch.manual_seed(3)  # same dropout and drop-path masks
        sum(out.square().mean() for out in model(x)).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()
                      if p.grad is not None})
    assert set(grads[0]) == set(grads[1]) == adapter_params(plain)
    for name, expected in grads[0].items():
        assert expected.abs().sum() > 0, name
        torch.testing.assert_close(grads[1][name], expected, rtol=1e-5,
                                   atol=1e-7, msg=name)


# ------------------------------------------------ pretrained checkpoints
def microsoft_swin_checkpoint(embed_dims, depths, num_heads, window_size=7,
                              img_size=224, num_classes=10, seed=0):
    """Random weights in the layout of Microsoft's Swin releases (the
    ImageNet checkpoints that ``convert_weights=True`` reads): ``model``
    holding ``patch_embed.proj``, ``layers.{i}.blocks.{j}.attn.qkv``,
    ``mlp.fc1``, ``layers.{i}.downsample.reduction``, the attention masks of
    shifted blocks, a final ``norm`` and a classification ``head``."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator)

    area = window_size * window_size
    sd = {
        'patch_embed.proj.weight': rand(embed_dims, 3, 4, 4),
        'patch_embed.proj.bias': rand(embed_dims),
        'patch_embed.norm.weight': rand(embed_dims),
        'patch_embed.norm.bias': rand(embed_dims),
    }
    resolution = img_size // 4
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        c = embed_dims * 2**i
        for j in range(depth):
            p = f'layers.{i}.blocks.{j}.'
            sd.update({
                p + 'norm1.weight': rand(c), p + 'norm1.bias': rand(c),
                p + 'attn.relative_position_bias_table':
                rand((2 * window_size - 1)**2, heads),
                p + 'attn.relative_position_index':
                torch.randint(0, (2 * window_size - 1)**2, (area, area),
                              generator=generator),
                p + 'attn.qkv.weight': rand(3 * c, c),
                p + 'attn.qkv.bias': rand(3 * c),
                p + 'attn.proj.weight': rand(c, c),
                p + 'attn.proj.bias': rand(c),
                p + 'norm2.weight': rand(c), p + 'norm2.bias': rand(c),
                p + 'mlp.fc1.weight': rand(4 * c, c),
                p + 'mlp.fc1.bias': rand(4 * c),
                p + 'mlp.fc2.weight': rand(c, 4 * c),
                p + 'mlp.fc2.bias': rand(c),
            })
            if j % 2 and resolution > window_size:
                windows = (resolution // window_size)**2
                sd[p + 'attn_mask'] = rand(windows, area, area)
        if i < len(depths) - 1:
            p = f'layers.{i}.downsample.'
            sd.update({
                p + 'reduction.weight': rand(2 * c, 4 * c),
                p + 'norm.weight': rand(4 * c), p + 'norm.bias': rand(4 * c),
            })
            resolution //= 2
    c = embed_dims * 2**(len(depths) - 1)
    sd.update({
        'norm.weight': rand(c), 'norm.bias': rand(c),
        'head.weight': rand(num_classes, c), 'head.bias': rand(num_classes),
    })
    return dict(model=sd)


def pretrained_cfg(path):
    # A ConfigDict, as built from a config: mmdet's Swin reads
    # init_cfg.checkpoint as an attribute.
    return ConfigDict(type='Pretrained', checkpoint=str(path))


def pretrained_mona(path):
    return MonaSwinTransformer(
        **TINY, convert_weights=True, init_cfg=pretrained_cfg(path))


def test_microsoft_checkpoint_loads_fully(tmp_path):
    checkpoint = microsoft_swin_checkpoint(32, TINY['depths'],
                                           TINY['num_heads'])
    torch.save(checkpoint, tmp_path / 'swin.pth')
    model = pretrained_mona(tmp_path / 'swin.pth')
    model.init_weights()  # raises if any frozen weight was not loaded
    state = model.state_dict()
    converted = {k[len('backbone.'):]: v
                 for k, v in swin_converter(checkpoint['model']).items()}
    loaded = [k for k in converted if k in state]
    assert len(loaded) > 0.9 * len(converted)
    for key in loaded:
        assert torch.equal(state[key], converted[key]), key
    official = checkpoint['model']
    assert torch.equal(state['stages.1.blocks.1.attn.w_msa.qkv.weight'],
                       official['layers.1.blocks.1.attn.qkv.weight'])
    assert torch.equal(state['stages.3.blocks.0.ffn.layers.0.0.bias'],
                       official['layers.3.blocks.0.mlp.fc1.bias'])
    not_in_checkpoint = {
        n for n, _ in model.named_parameters()
        if n not in converted} - adapter_params(model)
    # The official releases have no dense-prediction output norms: they keep
    # the LayerNorm init, frozen, as in the official Mona code.
    assert not_in_checkpoint == {f'norm{i}.{p}' for i in range(4)
                                 for p in ('weight', 'bias')}
    for i in range(4):
        norm = getattr(model, f'norm{i}')
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert not norm.weight.requires_grad
    for _, adapter in model.named_adapters():  # official adapter init
        assert torch.equal(adapter.gamma, torch.full_like(adapter.gamma, 1e-6))


def test_missing_pretrained_key_raises_naming_it(tmp_path):
    checkpoint = microsoft_swin_checkpoint(32, TINY['depths'],
                                           TINY['num_heads'])
    del checkpoint['model']['layers.2.blocks.1.mlp.fc2.weight']
    torch.save(checkpoint, tmp_path / 'swin.pth')
    with pytest.raises(PretrainedMismatchError,
                       match=r'missing \(1\): stages\.2\.blocks\.1\.ffn\.'
                       r'layers\.1\.weight'):
        pretrained_mona(tmp_path / 'swin.pth').init_weights()


def test_wrong_shaped_pretrained_key_raises_naming_it(tmp_path):
    checkpoint = microsoft_swin_checkpoint(32, TINY['depths'],
                                           TINY['num_heads'])
    checkpoint['model']['layers.1.blocks.0.attn.qkv.weight'] = torch.zeros(
        96, 64)
    torch.save(checkpoint, tmp_path / 'swin.pth')
    with pytest.raises(PretrainedMismatchError,
                       match=r'wrong shape(.|\n)*stages\.1\.blocks\.0\.attn\.'
                       r'w_msa\.qkv\.weight'):
        pretrained_mona(tmp_path / 'swin.pth').init_weights()


def test_other_architecture_raises(tmp_path):
    torch.save(microsoft_swin_checkpoint(48, (2, 2, 2, 2), (2, 4, 8, 16)),
               tmp_path / 'swin_wider.pth')
    with pytest.raises(PretrainedMismatchError, match='wrong shape'):
        pretrained_mona(tmp_path / 'swin_wider.pth').init_weights()


def test_unconverted_microsoft_checkpoint_raises(tmp_path):
    torch.save(microsoft_swin_checkpoint(32, TINY['depths'],
                                         TINY['num_heads']),
               tmp_path / 'swin.pth')
    model = MonaSwinTransformer(
        **TINY, init_cfg=pretrained_cfg(tmp_path / 'swin.pth'))
    with pytest.raises(PretrainedMismatchError, match='convert_weights=True'):
        model.init_weights()


# --------------------------------------------------- the four configs
class FrozenWeightsProbe(Hook):
    """Copies every frozen weight once the model is initialised."""

    def before_train(self, runner):
        self.frozen = {
            n: p.detach().clone()
            for n, p in runner.model.named_parameters() if not p.requires_grad
        }
        self.adapters = {
            n: p.detach().clone()
            for n, p in runner.model.named_parameters() if '_adapter.' in n
        }


@pytest.mark.slow
@pytest.mark.parametrize('config', [
    'configs/mona/maskrcnn_swinb_coco.py',
    'configs/mona/upernet_swinb_ade20k.py',
    'configs/mona/fasterrcnn_swinb_voc.py',
    'configs/mona/orientedrcnn_swinb_dota.py',
])
def test_config_trains_adapters_only(config, demo_data, tmp_path):
    """One AdamW step of the Swin-B config at 128x128 on generated data."""
    cfg = tiny_runner_cfg(osp.join(REPO_ROOT, config), demo_data, tmp_path)
    # Only the training step is under test: no validation, no 400 MB save.
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.default_hooks.checkpoint = None
    if 'decode_head' in cfg.model:  # UperNet's 1x1 pooling + BN: batch >= 2
        cfg.train_dataloader.batch_size = 2
    runner = Runner.from_cfg(cfg)
    probe = FrozenWeightsProbe()
    runner.register_hook(probe)
    runner.train()
    params = dict(runner.model.named_parameters())
    assert type(runner.model.backbone).__name__ == 'MonaSwinTransformer'
    assert sum(p.numel() for n, p in params.items()
               if n.startswith('backbone.') and p.requires_grad) == 3_667_456
    assert set(probe.frozen) == {
        n for n in params if n.startswith('backbone.')} - set(probe.adapters)
    for name, before in probe.frozen.items():
        assert torch.equal(params[name], before), name
    changed = [n for n, before in probe.adapters.items()
               if not torch.equal(params[n], before)]
    assert changed, 'no adapter weight moved'
