"""Bad adapter arguments fail when the model is built, naming the argument
(not later as a torch shape error, a ZeroDivisionError, or never: a setting
that switches the method off, such as a zero scale, is refused too)."""
import math

import pytest

from mmpeft.adapters import build_adapter, build_weight_adapter

POSITIVE = 'must be an integer >= 1'
SCALE = 'must be a finite number > 0'
DROPOUT = r'must be in \[0, 1\)'
FLAG = 'must be True or False'

BAD = [
    # Mona
    (dict(type='Mona', inner_dim=0), f'Mona: inner_dim {POSITIVE}'),
    (dict(type='Mona', inner_dim=-4), f'Mona: inner_dim {POSITIVE}'),
    (dict(type='Mona', inner_dim=8.0), 'Mona: inner_dim must be an integer'),
    (dict(type='Mona', dropout=1.0), fr'Mona: dropout .* {DROPOUT}, got 1.0'),
    (dict(type='Mona', dropout=-0.1), f'Mona: dropout .* {DROPOUT}'),
    (dict(type='Mona', fused='no'), f'Mona: fused {FLAG}'),
    (dict(type='Mona', deploy=1), f'Mona: deploy {FLAG}'),
    # RepAdapter
    (dict(type='RepAdapter', hidden_dim=0),
     f'RepAdapter: hidden_dim {POSITIVE}'),
    (dict(type='RepAdapter', groups=0), f'RepAdapter: groups {POSITIVE}'),
    (dict(type='RepAdapter', groups=-2), f'RepAdapter: groups {POSITIVE}'),
    (dict(type='RepAdapter', dropout=2), f'RepAdapter: dropout .* {DROPOUT}'),
    (dict(type='RepAdapter', scale=0), f'RepAdapter: scale .* {SCALE}'),
    (dict(type='RepAdapter', scale=-1.0), f'RepAdapter: scale .* {SCALE}'),
    (dict(type='RepAdapter', scale=math.nan), f'RepAdapter: scale .* {SCALE}'),
    # MiMi
    (dict(type='MiMiAdapter', hidden_dim=-1),
     'MiMiAdapter: hidden_dim must be an integer >= 0'),
    (dict(type='MiMiAdapter', hidden_dim=4, bias='yes'),
     f'MiMiAdapter: bias {FLAG}'),
    # Houlsby adapter
    (dict(type='HoulsbyAdapter', hidden_dim=0),
     f'HoulsbyAdapter: hidden_dim {POSITIVE}'),
    (dict(type='HoulsbyAdapter', hidden_dim=-8),
     f'HoulsbyAdapter: hidden_dim {POSITIVE}'),
    (dict(type='HoulsbyAdapter', init_scale=0),
     f'HoulsbyAdapter: init_scale .* {SCALE}'),
    (dict(type='HoulsbyAdapter', init_scale=-1e-3),
     f'HoulsbyAdapter: init_scale .* {SCALE}'),
    # The Mona paper's Adapter / AdaptFormer baselines
    (dict(type='BottleneckAdapter', hidden_dim=0),
     f'BottleneckAdapter: hidden_dim {POSITIVE}'),
    (dict(type='BottleneckAdapter', scale=0),
     f'BottleneckAdapter: scale .* {SCALE}'),
    (dict(type='BottleneckAdapter', scale=math.inf),
     f'BottleneckAdapter: scale .* {SCALE}'),
    (dict(type='BottleneckAdapter', dropout=1),
     f'BottleneckAdapter: dropout .* {DROPOUT}'),
    # AdaptFormer
    (dict(type='AdaptFormer', hidden_dim=0),
     f'AdaptFormer: hidden_dim {POSITIVE}'),
    (dict(type='AdaptFormer', hidden_dim=-64),
     f'AdaptFormer: hidden_dim {POSITIVE}'),
    (dict(type='AdaptFormer', scale=0), f'AdaptFormer: scale .* {SCALE}'),
    (dict(type='AdaptFormer', scale=-0.1), f'AdaptFormer: scale .* {SCALE}'),
    (dict(type='AdaptFormer', scale=True), f'AdaptFormer: scale .* {SCALE}'),
    (dict(type='AdaptFormer', scale='0.1x'), 'learnable_scalar'),
    (dict(type='AdaptFormer', dropout=1.5),
     f'AdaptFormer: dropout .* {DROPOUT}'),
    (dict(type='AdaptFormer', layernorm='out'), "'none' or 'in'"),
    # LoRand
    (dict(type='LoRand', factor=0), f'LoRand: factor {POSITIVE}'),
    (dict(type='LoRand', factor=64), 'LoRand: factor=64 leaves no bottleneck'),
    (dict(type='LoRand', num_branch=0), f'LoRand: num_branch {POSITIVE}'),
    (dict(type='LoRand', kernel_dim=-1), f'LoRand: kernel_dim {POSITIVE}'),
    (dict(type='LoRand', kernel_dim=0), f'LoRand: kernel_dim {POSITIVE}'),
]


def _id(cfg):
    return '-'.join([cfg['type']] + [f'{k}={v}' for k, v in cfg.items()
                                      if k != 'type'])


@pytest.mark.parametrize('cfg, message', BAD, ids=[_id(c) for c, _ in BAD])
def test_bad_value_names_the_argument(cfg, message):
    with pytest.raises(ValueError, match=message) as error:
        build_adapter(cfg, 32)
    assert 'adapter_cfg' in str(error.value)  # where to fix it


BAD_LORA = [
    (dict(r=0), f'LoRA: r {POSITIVE}'),
    (dict(r=-4), f'LoRA: r {POSITIVE}'),
    (dict(r=4.0), 'LoRA: r must be an integer'),
    (dict(alpha=0), f'LoRA: alpha .* {SCALE}'),
    (dict(alpha=-16), f'LoRA: alpha .* {SCALE}'),
    (dict(dropout=1.0), f'LoRA: dropout .* {DROPOUT}'),
    (dict(enable_lora=[False, False, False]), 'at least one True'),
    (dict(enable_lora='qv'), 'LoRA: enable_lora must be a list'),
    (dict(enable_lora=[1, 0, 1]), 'LoRA: enable_lora must be a list'),
    (dict(enable_lora=[True, False, True, False, True]),
     'do not divide the 48 outputs'),
]


@pytest.mark.parametrize('args, message', BAD_LORA,
                         ids=[_id(dict(type='LoRA', **a)) for a, _ in BAD_LORA])
def test_bad_lora_value_names_the_argument(args, message):
    with pytest.raises(ValueError, match=message) as error:
        build_weight_adapter(dict(type='LoRA', **args), 16, 48)
    assert 'adapter' in str(error.value)  # where to fix it


@pytest.mark.parametrize('cfg', [
    dict(type='Mona'), dict(type='RepAdapter'), dict(type='HoulsbyAdapter'),
    dict(type='BottleneckAdapter'), dict(type='AdaptFormer'),
    dict(type='LoRand'), dict(type='MiMiAdapter', hidden_dim=4)],
    ids=lambda c: c['type'])
def test_bad_width_from_the_backbone_is_named(cfg):
    with pytest.raises(ValueError, match=f'{cfg["type"]}: in_dim must be an '
                       'integer'):
        build_adapter(cfg, 0)


@pytest.mark.parametrize('cfg', [
    dict(type='Mona', inner_dim=1, dropout=0.0, fused=False),
    dict(type='RepAdapter', hidden_dim=2, groups=2, dropout=0.0, scale=0.5),
    dict(type='MiMiAdapter', hidden_dim=0),  # every neuron pruned (deploy)
    dict(type='HoulsbyAdapter', hidden_dim=1, init_scale=1),
    dict(type='BottleneckAdapter', hidden_dim=1, scale=0.1, dropout=0.0),
    dict(type='AdaptFormer', hidden_dim=1, scale='learnable_scalar',
         dropout=0.0),
    dict(type='AdaptFormer', scale=2),  # an int is a number
    dict(type='LoRand', factor=32, num_branch=1, kernel_dim=1),  # m = 1
], ids=_id)
def test_edge_values_still_build(cfg):
    build_adapter(cfg, 32)


def test_lora_edge_values_still_build():
    lora = build_weight_adapter(
        dict(type='LoRA', r=1, alpha=0.5, enable_lora=[False, True, False]),
        16, 48)
    assert lora.scaling == 0.5 and lora.lora_B.shape == (16, 1)
