"""mmpeft/methods.py itself: the table's names and links hold together (every
own-paper form next to its default, config bases where the table says,
policies that the freeze hook accepts), ``methods_for`` follows the table,
and MiMi's deploy function prunes to the target globally by the official
score before shrinking."""
import copy
import dataclasses
import os.path as osp

import pytest
import torch
from mmengine.registry import MODELS

from helpers import REPO_ROOT
from mmpeft.engine.peft_freeze_hook import FreezePolicy
from mmpeft.methods import (COMPARISON, HOST_TYPES, METHODS, ORIGINAL,
                            POLICIES, POLICY_METHODS, default_key,
                            hosts_of_form, methods_for)
from mmpeft.models.placements import parse_adapters


def test_every_own_paper_form_sits_next_to_its_default():
    for table in (METHODS, POLICY_METHODS):
        for key, entry in table.items():
            assert entry.name == key
            name, _, host = key.rpartition('_')
            if name.endswith(ORIGINAL):
                default = f'{name[:-len(ORIGINAL)]}_{host}'
                assert entry.variant_of == default and default in table
                assert table[default].host == entry.host
            else:
                assert entry.variant_of == ''
    assert default_key('lora_orig', 'vit') == 'lora_vit'
    assert default_key('lora', 'vit') == ''


def test_each_comparison_entry_runs_on_every_host_with_its_base():
    for name, (adapters, paper, merges) in COMPARISON.items():
        parse_adapters(adapters)  # placements and types the hosts accept
        for host in hosts_of_form(name):  # own-paper forms: swin / vit
            method = METHODS[f'{name}_{host}']
            assert method.backbone == dict(type=HOST_TYPES[host],
                                           adapters=adapters)
            assert (method.paper, method.merges) == (paper, merges)
            assert method.config_base == \
                f'configs/_base_/methods/{name}_{host}.py'
            assert osp.isfile(osp.join(REPO_ROOT, method.config_base))


def test_each_policy_is_a_freeze_policy_with_its_base():
    fields = {f.name for f in dataclasses.fields(FreezePolicy)}
    for name, (policy, _) in POLICIES.items():
        for host in hosts_of_form(name):
            entry = POLICY_METHODS[f'{name}_{host}']
            assert entry.policy == policy
            if policy is None:  # Full: the baseline configs
                assert entry.config_base == ''
                continue
            assert set(policy) <= fields
            FreezePolicy(**policy)
            assert osp.isfile(osp.join(REPO_ROOT, entry.config_base))


def test_the_defaults_are_the_mona_papers_baselines():
    """The settings the official code runs (Leiyi-Hu/mona, CoLin): the
    table is where they live, so a change there must be deliberate."""
    lora, = COMPARISON['lora'][0]['attn'].values()
    assert lora == dict(type='LoRA', r=64, alpha=1, dropout=0.0,
                        enable_lora=[True, False, True])
    adapter = COMPARISON['adapter'][0]
    assert adapter['attn']['series'] == adapter['ffn']['series'] == dict(
        type='BottleneckAdapter', hidden_dim=64, scale=1.0, dropout=0.1)
    assert COMPARISON['adaptformer'][0] == dict(ffn=dict(parallel=dict(
        type='BottleneckAdapter', hidden_dim=64, scale=0.1, dropout=0.1)))
    lorand = COMPARISON['lorand'][0]
    assert set(lorand) == {'attn', 'ffn'}
    for sublayer in lorand.values():
        assert sublayer == dict(after_drop_path=dict(
            type='LoRand', factor=2, num_branch=4, kernel_dim=8))
    assert POLICIES['bitfit'][0] == dict(train_biases=True,
                                         train_bias_tables=True)
    assert POLICIES['partial1'][0] == dict(train_last_block=True)


def test_methods_for_follows_the_table():
    for host in HOST_TYPES:
        assert list(methods_for(host)) == [
            m for m in METHODS.values() if m.host == host]
    assert {m.name for host in HOST_TYPES for m in methods_for(host)} == \
        set(METHODS)
    assert methods_for('convnext') == ()


# ------------------------------------------------- MiMi's deploy function
TINY_SWIN = dict(pretrain_img_size=32, embed_dims=16, depths=(2, 2),
                 num_heads=(1, 2), window_size=4, strides=(4, 2),
                 out_indices=(0, 1))


def official_scores(adapter):
    """MiMi's score of each hidden neuron: (||W_down[i, :]||_1 +
    ||W_up[:, i]||_1) / 2d, d the token width."""
    down, up = adapter.down.weight, adapter.up.weight
    return (down.abs().sum(1) + up.abs().sum(0)) / (2 * down.shape[1])


def test_mimi_deploy_prunes_globally_to_sigma_32_and_shrinks():
    torch.manual_seed(0)
    model = MODELS.build(dict(METHODS['mimi'].backbone, **TINY_SWIN))
    model.eval()  # mmdet's Swin.train() returns None: no chaining
    with torch.no_grad():
        for _, adapter in model.named_slots():
            for param in adapter.parameters():
                param.add_(torch.randn_like(param) * 0.1)
    reference = copy.deepcopy(model)
    adapters = [a for _, a in reference.named_slots()]
    scores = torch.cat([official_scores(a) for a in adapters])
    keep = sum(a.in_dim for a in adapters) // 32
    kept = torch.zeros_like(scores, dtype=torch.bool)
    kept[scores.argsort(descending=True)[:keep]] = True
    with torch.no_grad():  # drop the other neurons by hand
        for adapter, mask in zip(adapters, kept.split(
                [a.hidden_dim for a in adapters])):
            adapter.down.weight[~mask] = 0
            adapter.up.weight[:, ~mask] = 0

    METHODS['mimi'].deploy(model)
    widths = [a.hidden_dim for _, a in model.named_slots()]
    assert sum(widths) == keep and sum(widths) < scores.numel()
    assert widths == [int(m.sum()) for m in kept.split(
        [a.hidden_dim for a in adapters])]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for out, ref in zip(model(x), reference(x)):
            torch.testing.assert_close(out, ref, rtol=1e-5,
                                       atol=1e-6 * ref.abs().max())

