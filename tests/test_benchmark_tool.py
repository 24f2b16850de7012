"""tools/benchmark.py: runs end to end, reports honest counts, and the
frozen weights really cost no gradients and no optimizer state."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
from helpers import REPO_ROOT, load_tool
from mmdet.models.backbones import SwinTransformer
from mmengine.registry import MODELS
from mmseg.models.backbones import VisionTransformer

from mmpeft import benchmark as bench
from mmpeft.methods import methods_for

MiB = 1 << 20
TRAIN_FIELDS = {'train_ms', 'train_ms_samples', 'train_peak_mib',
                'backbone_grad_mib', 'frozen_params_with_grad',
                'backbone_optimizer', 'other_optimizer'}
INFER_FIELDS = {'infer_ms', 'infer_ms_samples', 'infer_peak_mib'}
COMMON_FIELDS = {'summary', 'backbone_trainable_params', 'backbone_params',
                 'model_trainable_params', 'model_params', 'backbone_gflops',
                 'ratios'}
PRESET_HOSTS = {'tiny-swin': 'swin', 'tiny-vit': 'vit'}


def expected_variants(host):
    """The default variants by the rule of docs/benchmarks.md: the three
    references (and, on the ViT, full fine-tuning with the packed attention
    kernel its PEFT host runs), the freeze-policy methods that train part of
    the backbone, then four forms of each registered method on ``host`` (the
    own papers' forms only when named)."""
    return ['full', 'full_cp', 'frozen'] + (
        ['full_packed'] if host == 'vit' else []) + [
        f'{name}_{host}' for name in ('bitfit', 'normtuning', 'partial1')
    ] + [
        f'{m.name}{form}' for m in methods_for(host)
        if MODELS.get(m.backbone['type']) and not m.variant_of
        for form in ('', '_cp', '_adapter_cp', '_deploy')
    ]


@pytest.fixture(scope='module', params=sorted(PRESET_HOSTS))
def tiny_run(request, tmp_path_factory):
    """The real command line on a tiny preset: (preset, JSON, out prefix)."""
    out = str(tmp_path_factory.mktemp('bench') / request.param)
    subprocess.run(
        [sys.executable, 'tools/benchmark.py', '--preset', request.param,
         '--repeats', '2', '--warmup', '0', '--threads', '1', '--out', out],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    with open(out + '.json') as f:
        return request.param, json.load(f), out


def test_tool_writes_every_variant_with_its_fields(tiny_run):
    preset, doc, out = tiny_run
    assert list(doc['variants']) == expected_variants(PRESET_HOSTS[preset])
    family = bench.FAMILIES[doc['family']]
    for name, result in doc['variants'].items():
        variant = next(v for v in family.variants if v.name == name)
        fields = COMMON_FIELDS | (TRAIN_FIELDS if variant.trains else set()) \
            | (INFER_FIELDS if variant.infers else set())
        assert fields <= set(result), (name, fields - set(result))
        if variant.trains:
            assert len(result['train_ms_samples']) == 2
            assert result['train_peak_mib'] > 0
        assert result['backbone_gflops'] > 0
    assert doc['variants']['full']['ratios']['train_ms'] == 1.0
    assert {t['variant'] for t in doc['targets']} <= set(doc['variants'])
    assert osp.getsize(out + '.png') > 0


def _adapter_params(preset, per_adapter):
    """Independent count: two adapters per block, by the paper's formula."""
    cfg = bench.PRESETS[preset].backbone
    if preset == 'tiny-swin':
        widths = [cfg['embed_dims'] * 2**i for i in range(4)]
        blocks = zip(widths, cfg['depths'])
    else:
        blocks = [(cfg['embed_dims'], cfg['num_layers'])]
    return sum(2 * depth * per_adapter(c) for c, depth in blocks)


def test_trainable_params_match_an_independent_count(tiny_run):
    preset, doc, _ = tiny_run
    preset_cfg = bench.PRESETS[preset]
    stock = (SwinTransformer(**preset_cfg.backbone) if preset == 'tiny-swin'
             else VisionTransformer(img_size=preset_cfg.img_size,
                                    **preset_cfg.backbone))
    counts = {n: r['backbone_trainable_params']
              for n, r in doc['variants'].items()}
    assert counts['full'] == sum(p.numel() for p in stock.parameters())
    assert counts['frozen'] == 0
    # The policy methods, counted on the stock backbone by name and type, as
    # the Mona paper's code selects them ('bias' in the name; the last
    # block, no output norm).
    host = PRESET_HOSTS[preset]
    named = list(stock.named_parameters())
    assert counts[f'bitfit_{host}'] == sum(
        p.numel() for n, p in named if 'bias' in n)
    assert counts[f'normtuning_{host}'] == sum(
        p.numel() for m in stock.modules()
        if isinstance(m, torch.nn.LayerNorm) for p in m.parameters())
    last = (f'stages.{len(stock.stages) - 1}.blocks.'
            f'{len(stock.stages[-1].blocks) - 1}.' if host == 'swin'
            else f'layers.{len(stock.layers) - 1}.')
    assert counts[f'partial1_{host}'] == sum(
        p.numel() for n, p in named if n.startswith(last))
    if preset == 'tiny-swin':
        # Mona: 133 C + 9728 per adapter (DESIGN.md, inner width 64).
        mona = _adapter_params(preset, lambda c: 133 * c + 9728)
        assert counts['mona'] == counts['mona_cp'] == \
            counts['mona_adapter_cp'] == mona
        if 'mimi' in counts:  # sigma0 = 4, no biases: 2 C (C / 4) each
            assert counts['mimi'] == counts['mimi_cp'] == \
                counts['mimi_adapter_cp'] == _adapter_params(
                    preset, lambda c: 2 * c * (c // 4))
            # Deploy: pruned to sigma = 32 and shrunk: adapters remain, but
            # 8x fewer neurons than before pruning.
            shrunk = doc['variants']['mimi_deploy']['backbone_params']
            assert counts['full'] < shrunk < \
                doc['variants']['mimi']['backbone_params']
    else:
        # RepAdapter: A (C -> 8, bias) + grouped B (8 -> C, 2 groups, bias).
        rep = _adapter_params(preset, lambda c: 8 * c + 8 + 4 * c + c)
        assert counts['repadapter'] == counts['repadapter_cp'] == \
            counts['repadapter_adapter_cp'] == rep
        # Merged: exactly the stock ViT's parameters, nothing added.
        assert doc['variants']['repadapter_deploy']['backbone_params'] == \
            counts['full']


def test_frozen_weights_get_no_gradient_and_no_optimizer_state(tiny_run):
    _, doc, _ = tiny_run
    variants = doc['variants']
    frozen = variants['frozen']
    assert frozen['backbone_grad_mib'] == 0
    assert frozen['backbone_optimizer'] == dict(
        params_in_groups=0, params_with_state=0, state_tensors=0,
        state_mib=0.0)
    assert frozen['other_optimizer']['params_with_state'] > 0  # probe head
    for name, result in variants.items():
        if 'backbone_optimizer' not in result:
            continue
        assert result['frozen_params_with_grad'] == 0
        trainable = result['backbone_trainable_params']
        opt = result['backbone_optimizer']
        # AdamW: exp_avg and exp_avg_sq of each trainable weight, plus one
        # scalar step per parameter tensor; nothing for frozen weights.
        state_bytes = opt['state_mib'] * MiB
        assert 8 * trainable <= state_bytes <= 8 * trainable + \
            8 * opt['state_tensors']
        # fp32 gradients of exactly the trainable weights (full fine-tuning
        # of a ViT may hold a little more: the class token's gradient is a
        # view into the gradient of the concatenated tokens).
        grad_bytes = result['backbone_grad_mib'] * MiB
        assert grad_bytes >= 4 * trainable
        if not name.startswith('full'):
            assert grad_bytes == 4 * trainable


def _workload(variant_name, amp=None, optim_cfg=bench.DEFAULT_OPTIM_WRAPPER):
    preset = bench.PRESETS['tiny-swin']
    variant = next(v for v in bench.SWIN.variants if v.name == variant_name)
    setting = bench.Setting(bench.SWIN, 'backbone', 'tiny-swin',
                            preset.img_size, 1, torch.device('cpu'), amp=amp)
    cfg = bench.preset_backbone_cfg(preset, preset.img_size)
    return bench.build_backbone_workloads(cfg, setting, [variant],
                                          optim_cfg)[variant_name]


@pytest.mark.parametrize('amp', [None, 'bf16'])
def test_peft_step_updates_adapters_only(amp):
    """One optimizer step (fp32 and bf16 autocast) moves every adapter
    weight and leaves every frozen weight bit-identical."""
    workload = _workload('mona', amp)
    before = {n: p.detach().clone()
              for n, p in workload.backbone.named_parameters()}
    flags = [p.requires_grad for p in workload.module.parameters()]
    workload.train_step()
    for name, param in workload.backbone.named_parameters():
        moved = not torch.equal(before[name], param)
        assert moved == param.requires_grad, name
    workload.infer_step()  # measured with every weight frozen, then restored
    assert [p.requires_grad for p in workload.module.parameters()] == flags
    assert all(p.dtype == torch.float32 for p in workload.module.parameters())


def test_frozen_weights_without_paramwise_cfg_get_no_optimizer_state():
    """Without a paramwise_cfg mmengine hands AdamW the frozen weights too;
    AdamW must still keep no state for them and not decay them."""
    plain = dict(type='OptimWrapper',
                 optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05))
    workload = _workload('frozen', optim_cfg=plain)
    before = [p.detach().clone() for p in workload.backbone.parameters()]
    audit = workload.audit_step()
    backbone = audit['backbone_optimizer']
    assert backbone['params_in_groups'] == len(before)
    assert backbone['params_with_state'] == backbone['state_tensors'] == 0
    assert all(torch.equal(b, p)
               for b, p in zip(before, workload.backbone.parameters()))


def test_peak_rise_counts_live_bytes_not_total_allocations():
    def allocate():
        a = torch.empty(1 << 18)  # 1 MiB
        del a
        b = torch.empty(1 << 19)  # 2 MiB, allocated after a is freed
        return b.sum()

    rise = bench.peak_rise_bytes(allocate, torch.device('cpu'))
    assert 2 * MiB <= rise < 2 * MiB + 4096


def test_help_and_bad_arguments():
    tool = load_tool('benchmark')
    with pytest.raises(SystemExit) as exc:
        tool.parse_args(['--help'])
    assert exc.value.code == 0
    with pytest.raises(ValueError, match='must include `full`'):
        bench.select_variants(bench.SWIN, ['mona'])
    with pytest.raises(ValueError, match='Unknown variants'):
        bench.select_variants(bench.VIT, ['full', 'mona'])


@pytest.mark.slow
def test_whole_detector_scope(tmp_path):
    """--config: the config's detector with its backbone swapped per
    variant, trained with the config's optim_wrapper (paramwise_cfg: the
    frozen weights are not even in the optimizer)."""
    doc = load_tool('benchmark').main([
        '--config', 'configs/baselines/maskrcnn_swinb_coco.py',
        '--cfg-options', 'model.backbone.embed_dims=32',
        'model.backbone.depths=[1,1,1,1]',
        'model.backbone.num_heads=[1,2,4,8]',
        'model.neck.in_channels=[32,64,128,256]', '--img-size', '64',
        '--batch-size', '1', '--repeats', '1', '--warmup', '0',
        '--variants', 'full', 'frozen', 'mona', '--out',
        str(tmp_path / 'maskrcnn')
    ])
    variants = doc['variants']
    assert doc['scope'] == 'model' and list(variants) == [
        'full', 'frozen', 'mona'
    ]
    assert variants['frozen']['backbone_optimizer']['params_in_groups'] == 0
    assert variants['mona']['backbone_trainable_params'] == \
        _adapter_params('tiny-swin', lambda c: 133 * c + 9728)
    # The detector's neck and heads train in every variant.
    head = variants['full']['model_trainable_params'] - \
        variants['full']['backbone_trainable_params']
    assert variants['frozen']['model_trainable_params'] == head
    for result in variants.values():
        assert result['train_peak_mib'] > 0 and result['infer_ms'] > 0
