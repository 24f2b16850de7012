"""RepAdapter's segmentation recipe, ``FreezePolicy(train_biases=True)``:
the official run (``segmentation_task/tools/train.py``) trains every
parameter whose name holds 'head', 'rep' or 'bias'. The backbone biases train
and count as trainable backbone weights; with trained biases merging still
gives the unmerged outputs, the deploy state dict strict-loads into mmseg's
stock VisionTransformer, and the adapter-only file carries the biases while
the frozen base it names is the untouched pretrained ViT."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmseg.models.backbones import VisionTransformer
from torch import nn
from torch.utils.data import Dataset

import mmpeft
from helpers import REPO_ROOT, assert_close_to_scale
from mmpeft.engine import (FreezePolicy, FreezePolicyError,
                           adapter_checkpoint, apply_freeze_policy,
                           count_params)
from mmpeft.engine.export import check_adapter_checkpoint
from mmpeft.engine.param_table import BACKBONE
from mmpeft.engine.peft_freeze_hook import policy_from_config
from mmpeft.models import RepAdapterViT

# Every optional bias on: patch embedding, qkv (in_proj_bias), final norm.
SMALL = dict(img_size=(32, 32), patch_size=8, embed_dims=32, num_layers=2,
             num_heads=4, mlp_ratio=2, out_indices=(0, 1), final_norm=True,
             patch_bias=True, qkv_bias=True)


class Segmentor(nn.Module):
    """A backbone and a head, named as in mmseg (the policy reads names)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.decode_head = nn.Conv2d(32, 3, 1)

    def forward(self, x):
        return self.decode_head(self.backbone(x)[-1])


def pretrained_pair():
    """(stock ViT with random 'pretrained' weights, RepAdapter model on
    them, with the recipe's policy applied)."""
    torch.manual_seed(0)
    stock = VisionTransformer(**SMALL)
    stock.init_weights()
    model = Segmentor(
        RepAdapterViT(**SMALL, adapter_cfg=dict(type='RepAdapter',
                                                groups=2)))
    model.backbone.load_state_dict(stock.state_dict(), strict=False)
    apply_freeze_policy(model, FreezePolicy(train_biases=True))
    return stock, model


def stock_bias_names():
    """The official rule ('bias' in the name) on the stock ViT's names."""
    return {
        f'backbone.{name}'
        for name, _ in VisionTransformer(**SMALL).named_parameters()
        if 'bias' in name
    }


def train(model):
    """Move every trainable tensor (a zero-init adapter merges trivially)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


def test_biases_train_and_count_as_backbone_weights():
    _, model = pretrained_pair()
    adapters = {n for n, _ in model.named_parameters() if '_adapter' in n}
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    backbone_trains = {n for n in trains if n.startswith('backbone.')}
    assert backbone_trains - adapters == stock_bias_names()
    assert 'backbone.layers.0.attn.attn.in_proj_bias' in backbone_trains
    assert 'backbone.layers.0.attn.attn.in_proj_weight' not in trains
    assert {'decode_head.weight', 'decode_head.bias'} <= trains

    row = count_params(model).row(BACKBONE)
    params = dict(model.named_parameters())
    assert row.trainable == sum(params[n].numel() for n in stock_bias_names())
    assert row.trainable > 0

    apply_freeze_policy(model, FreezePolicy())  # the default trains none
    assert count_params(model).row(BACKBONE).trainable == 0


def test_trained_biases_merge_into_a_stock_vit():
    stock, model = pretrained_pair()
    train(model)
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        unmerged = model.backbone(x)
        merged_backbone = mmpeft.merge_adapters(copy.deepcopy(model.backbone))
        merged = merged_backbone(x)
    for out, ref in zip(merged, unmerged):
        assert ((out - ref).abs().max() / ref.abs().max()) < 1e-4
    deployed = VisionTransformer(**SMALL)
    deployed.load_state_dict(merged_backbone.state_dict(), strict=True)
    deployed.eval()  # mmseg's train() returns None: no chaining
    with torch.no_grad():
        for out, ref in zip(deployed(x), merged):  # stock vs mmpeft code
            assert_close_to_scale(out, ref)
    # the trained biases are in it (not the pretrained ones)
    key = 'layers.1.ffn.layers.1.bias'
    assert not torch.equal(deployed.state_dict()[key],
                           stock.state_dict()[key])


def test_adapter_file_carries_the_biases_and_names_the_pretrained_base():
    stock, model = pretrained_pair()
    train(model)
    adapters = adapter_checkpoint(model)
    assert stock_bias_names() <= set(adapters['state_dict'])
    frozen = adapters['meta']['mmpeft_adapters']['base']['frozen_keys']
    assert not stock_bias_names() & set(frozen)

    # The base is the pretrained ViT as it was: the trained model's frozen
    # weights hash like it, and the file restores the trained model on it.
    base = {f'backbone.{k}': v for k, v in stock.state_dict().items()}
    fresh = copy.deepcopy(model)
    fresh.backbone.load_state_dict(stock.state_dict(), strict=False)
    check_adapter_checkpoint(fresh, adapters, base)
    fresh.load_state_dict(adapters['state_dict'], strict=False)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_upernet_config_uses_the_recipe():
    cfg = Config.fromfile(f'{REPO_ROOT}/configs/repadapter/'
                          'upernet_vitb_ade20k.py')
    assert policy_from_config(cfg) == FreezePolicy(train_biases=True)
    detection = Config.fromfile(f'{REPO_ROOT}/configs/repadapter/'
                                'maskrcnn_vitb_coco.py')
    assert policy_from_config(detection) == FreezePolicy()


@pytest.mark.parametrize('name, expected', [
    ('backbone.layers.0.ln1.bias', True),
    ('backbone.layers.0.attn.attn.in_proj_bias', True),
    ('backbone.stages.0.blocks.0.attn.w_msa.relative_position_bias_table',
     False),
    ('backbone.layers.0.attn.attn.in_proj_weight', False),
])
def test_what_counts_as_a_bias(name, expected):
    from mmpeft.engine.peft_freeze_hook import is_bias
    assert is_bias(name) is expected


# ------------------------------------------------ in a runner's optimizer
class ToySegmentor(BaseModel):
    """Segmentor (above) regressing the mean of its output."""

    def __init__(self):
        super().__init__()
        _, self.net = pretrained_pair()
        apply_freeze_policy(self.net, FreezePolicy())  # as built: frozen

    def forward(self, inputs, targets=None, mode='tensor'):
        out = self.net(inputs).mean((1, 2, 3))
        if mode == 'loss':
            return dict(loss=F.mse_loss(out, targets))
        return out


class ToyImages(Dataset):

    def __len__(self):
        return 4

    def __getitem__(self, index):
        image = torch.randn(3, 32, 32,
                            generator=torch.Generator().manual_seed(index))
        return dict(inputs=image, targets=image.mean())


# paramwise_cfg: mmengine's constructor then leaves frozen parameters out.
OPTIM = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
             paramwise_cfg=dict(custom_keys={'bias': dict(decay_mult=0.0)}))
SCHEDULE = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                 end=3)]


def toy_runner(work_dir, cfg):
    return Runner(
        model=ToySegmentor(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyImages(),
                              sampler=dict(type='DefaultSampler',
                                           shuffle=False),
                              collate_fn=dict(type='default_collate'),
                              batch_size=2, num_workers=0),
        optim_wrapper=OPTIM, param_scheduler=SCHEDULE,
        train_cfg=dict(by_epoch=False, max_iters=2),
        custom_hooks=[dict(type='PEFTFreezeHook', train_biases=True)],
        default_hooks=dict(checkpoint=None), log_level='WARNING', cfg=cfg)


def test_unfrozen_biases_join_the_optimizer_and_train(tmp_path):
    """The runner builds its optimizer before any hook runs, from the model
    as built (biases frozen): the hook rebuilds it, with its schedulers."""
    runner = toy_runner(tmp_path, cfg=dict(optim_wrapper=OPTIM,
                                           param_scheduler=SCHEDULE))
    before = {n: p.detach().clone()
              for n, p in runner.model.net.backbone.named_parameters()}
    runner.train()
    groups = runner.optim_wrapper.optimizer.param_groups
    optimized = {id(p) for g in groups for p in g['params']}
    params = dict(runner.model.named_parameters())
    biases = {n[len('net.'):] for n in params if 'bias' in n}
    assert stock_bias_names() <= biases
    for name in stock_bias_names():
        param = params[f'net.{name}']
        assert id(param) in optimized
        assert not torch.equal(param, before[name[len('backbone.'):]])
    # the rebuilt schedulers drive the rebuilt optimizer (two steps taken)
    scheduler, = runner.param_schedulers
    assert scheduler.optimizer is runner.optim_wrapper
    assert groups[0]['lr'] == pytest.approx(1e-3 * (0.1 + 0.9 * 2 / 2))


def test_no_config_to_rebuild_from_is_a_clear_error(tmp_path):
    with pytest.raises(FreezePolicyError, match='Runner.from_cfg'):
        toy_runner(tmp_path, cfg=None).train()
