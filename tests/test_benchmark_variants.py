"""The benchmark's variants come from the method table: a method added to
METHODS is measured with no benchmark edit, the historical variant names
still select their variants, and the package stays out of ``import
mmpeft`` and off mmseg where a family does not need it."""
import ast
import glob
import os.path as osp
import subprocess
import sys

import pytest
from helpers import REPO_ROOT, load_tool
from torch import nn

from mmpeft import benchmark as bench
from mmpeft import methods
from mmpeft.models import MonaSwinTransformer

FORMS = ('', '_cp', '_adapter_cp', '_deploy')


def mona_params(c, inner):
    """One Mona adapter by hand: LayerNorm 2C, two scales 2C, down C*m + m,
    3/5/7 depthwise convs 83m + 3m, 1x1 projector m*m + m, up m*C + C."""
    return 2 * c + 2 * c + (c * inner + inner) + 86 * inner + \
        (inner * inner + inner) + (inner * c + c)


@pytest.fixture
def mona16(monkeypatch):
    """A method the benchmark has never seen: Mona with inner width 16."""
    method = methods.Method(
        'mona16', 'swin',
        dict(type='MonaSwinTransformer',
             adapter_cfg=dict(type='Mona', inner_dim=16)),
        paper='test entry')
    monkeypatch.setitem(methods.METHODS, method.name, method)
    return method


def test_every_method_of_the_table_gets_its_four_forms():
    for family in bench.FAMILIES.values():
        names = [v.name for v in family.variants]
        assert names[:3] == ['full', 'full_cp', 'frozen']
        for method in methods.methods_for(family.name):
            assert [f'{method.name}{f}' for f in FORMS] == \
                [n for n in names if n.startswith(method.name) and
                 n[len(method.name):] in FORMS]


def test_policy_methods_are_training_variants_of_the_stock_blocks():
    """BitFit / NormTuning / Partial-1 come from POLICY_METHODS; Fixed and
    Full are the references (aliases), and none has a deploy form."""
    for family in bench.FAMILIES.values():
        by_name = {v.name: v for v in family.variants}
        for pm in methods.POLICY_METHODS.values():
            if pm.host != family.name or not pm.policy:
                continue
            variant = by_name[pm.name]
            assert variant.trains and not variant.infers
            assert variant.method.backbone['adapters'] == {}
        assert bench.select_variants(
            family, ['full', f'fixed_{family.name}'])[1].name == 'frozen'


def test_a_method_added_to_the_table_is_benchmarked(mona16, tmp_path):
    default = [v.name for v in bench.select_variants(bench.SWIN)]
    assert [f'mona16{f}' for f in FORMS] == \
        [n for n in default if n.startswith('mona16')]
    doc = load_tool('benchmark').main([
        '--preset', 'tiny-swin', '--variants', 'full', 'mona16',
        'mona16_deploy', '--repeats', '1', '--warmup', '0', '--out',
        str(tmp_path / 'mona16')
    ])
    variants = doc['variants']
    assert list(variants) == ['full', 'mona16', 'mona16_deploy']
    cfg = bench.PRESETS['tiny-swin'].backbone
    expected = sum(2 * depth * mona_params(cfg['embed_dims'] * 2**i, 16)
                   for i, depth in enumerate(cfg['depths']))
    assert variants['mona16']['backbone_trainable_params'] == expected
    # merge_adapters fuses the three convs into one 7x7 kernel.
    assert variants['mona16_deploy']['backbone_params'] < \
        variants['mona16']['backbone_params']
    assert variants['mona16_deploy']['infer_ms'] > 0


def test_a_method_deploy_function_makes_its_deploy_variant(monkeypatch):
    calls = []
    method = methods.Method(
        'probe', 'swin', dict(type='MonaSwinTransformer'), paper='test',
        deploy=lambda backbone: calls.append(type(backbone)))
    monkeypatch.setitem(methods.METHODS, method.name, method)
    variant, = bench.select_variants(bench.SWIN, ['full', 'probe_deploy'],
                                     measure=('infer', ))[1:]
    assert not variant.trains
    backbone = MonaSwinTransformer(embed_dims=32, depths=(1, 1, 1, 1),
                                   num_heads=(1, 2, 4, 8), window_size=4)
    variant.prepare(backbone)
    assert calls == [MonaSwinTransformer]


def test_historical_names_select_the_derived_variants():
    swin = bench.select_variants(bench.SWIN, ['full', 'mimi_shrunk'])
    assert [v.name for v in swin] == ['full', 'mimi_deploy']
    assert swin[1].prepare is methods.METHODS['mimi'].deploy
    vit = bench.select_variants(bench.VIT, ['repadapter_merged', 'full'])
    assert [v.name for v in vit] == ['full', 'repadapter_deploy']
    assert {t.variant for f in bench.FAMILIES.values() for t in f.targets} <= \
        {v.name for f in bench.FAMILIES.values() for v in f.variants}


def test_own_paper_forms_are_measured_only_when_named():
    """A method's own-paper form (``<name>_orig``: variant_of set) costs what
    its default costs: out of the default run, selectable by name."""
    for family in bench.FAMILIES.values():
        default = {v.name for v in bench.select_variants(family)}
        forms = {v.name for v in family.variants if '_orig' in v.name}
        assert forms and not default & forms
        named = f'lora_orig_{family.name}'
        assert [v.name for v in bench.select_variants(
            family, ['full', named])] == ['full', named]
        assert f'lora_{family.name}' in default
        assert f'bitfit_orig_{family.name}' in {v.name for v in
                                               family.variants}


def test_mona_literal_is_the_method_with_the_three_conv_branch():
    literal, = [v for v in bench.SWIN.variants if v.name == 'mona_literal']
    assert not literal.default
    preset = bench.PRESETS['tiny-swin']
    cfg = bench.variants.variant_backbone_cfg(
        bench.SWIN, bench.preset_backbone_cfg(preset, preset.img_size),
        literal)
    assert cfg['type'] is MonaSwinTransformer
    assert cfg['adapter_cfg'] == dict(
        methods.METHODS['mona'].backbone['adapter_cfg'], fused=False)
    assert cfg['embed_dims'] == preset.backbone['embed_dims']


def test_import_mmpeft_leaves_the_benchmark_out():
    code = ('import sys, mmpeft; '
            "assert not [m for m in sys.modules "
            "if m.startswith('mmpeft.benchmark')], 'benchmark imported'")
    subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, check=True)


def test_benchmark_modules_import_mmseg_only_when_used():
    for path in glob.glob(osp.join(REPO_ROOT, 'mmpeft', 'benchmark', '*.py')):
        tree = ast.parse(open(path).read())
        top = [node for node in tree.body
               if isinstance(node, (ast.Import, ast.ImportFrom))]
        names = [alias.name for node in top if isinstance(node, ast.Import)
                 for alias in node.names] + \
            [node.module or '' for node in top
             if isinstance(node, ast.ImportFrom)]
        assert not [n for n in names if n.split('.')[0] == 'mmseg'], path


def test_swin_family_works_without_mmseg(monkeypatch):
    monkeypatch.setitem(sys.modules, 'mmseg.models.backbones', None)
    assert bench.family_of(MonaSwinTransformer) is bench.SWIN
    with pytest.raises(ValueError, match='No benchmark family'):
        bench.family_of(nn.Linear)
    with pytest.raises(ImportError, match='vit family needs mmseg'):
        bench.VIT.stock


def _cfg(family, preset, variant_name):
    variant = next(v for v in family.variants if v.name == variant_name)
    preset = bench.PRESETS[preset]
    return bench.variants.variant_backbone_cfg(
        family, bench.preset_backbone_cfg(preset, preset.img_size), variant)


def test_late_block_forms_select_the_last_stages_or_the_last_half():
    swin = _cfg(bench.SWIN, 'swin-t', 'mona_last2')
    assert swin['adapter_blocks'] == dict(stages=[-2, -1])
    assert swin['type'] is MonaSwinTransformer and not swin['adapter_cp']
    vit = _cfg(bench.VIT, 'vit-s', 'lora_vit_lasthalf')
    assert vit['adapter_blocks'] == dict(layers=[6, 7, 8, 9, 10, 11])
    assert _cfg(bench.VIT, 'tiny-vit', 'repadapter_lasthalf')[
        'adapter_blocks'] == dict(layers=[1])
    saves = _cfg(bench.SWIN, 'tiny-swin', 'lora_swin_bf16saves')
    assert saves['frozen_activations_dtype'] == 'bfloat16'
    for family in bench.FAMILIES.values():
        for method in methods.methods_for(family.name):
            names = {v.name for v in family.variants}
            late = 'last2' if family.name == 'swin' else 'lasthalf'
            forms = {f'{method.name}_{late}', f'{method.name}_bf16saves'}
            if method.name.startswith('e3va'):  # it refuses both options
                assert not forms & names
            else:
                assert forms <= names


def test_all_train_is_every_method_with_its_references():
    for family in bench.FAMILIES.values():
        chosen = [v.name for v in bench.select_variants(
            family, ['all-train'], measure=('train', ))]
        assert {'full', 'frozen'} <= set(chosen)
        for method in methods.methods_for(family.name):
            if method.variant_of:  # an own-paper form: only when named
                assert method.name not in chosen
                continue
            assert method.name in chosen
            assert (f'{method.name}_bf16saves' in chosen) != (
                method.name.startswith('e3va'))
        for pm in methods.POLICY_METHODS.values():
            if pm.host == family.name and pm.policy:
                assert (pm.name in chosen) != bool(pm.variant_of)
        assert not [n for n in chosen
                    if n.endswith(('_cp', '_deploy', '_literal'))]
    vit = [v.name for v in bench.select_variants(bench.VIT, ['all-train'])]
    assert 'full_sdpa' in vit and 'lora_vit_sdpa' in vit
    swin = [v.name for v in bench.select_variants(bench.SWIN, ['all-train'])]
    assert {'mona_last2', 'lora_swin_last2'} <= set(swin)
    assert not [n for n in swin if 'sdpa' in n]


def test_a_method_on_another_attention_kernel_gets_its_reference_row():
    preset = bench.PRESETS['vit-s']
    base = bench.preset_backbone_cfg(preset, preset.img_size)
    chosen = bench.select_variants(bench.VIT, ['full', 'frozen', 'lora_vit',
                                               'lora_vit_sdpa'])
    variants, references, notes = bench.add_kernel_references(
        bench.VIT, base, chosen)
    assert [v.name for v in variants] == [
        'full', 'frozen', 'full_packed', 'full_sdpa', 'lora_vit',
        'lora_vit_sdpa']
    assert references == dict(full='full', frozen='full',
                              full_packed='full', full_sdpa='full',
                              lora_vit='full_packed',
                              lora_vit_sdpa='full_sdpa')
    assert len(notes) == 2 and 'lora_vit:' in notes[0]
    reference = next(v for v in variants if v.name == 'full_packed')
    cfg = bench.variants.variant_backbone_cfg(bench.VIT, base, reference)
    assert cfg['attention'] == 'packed' and cfg['train_backbone']
    assert bench.variants.attention_kernel(cfg) == 'packed'
    from mmpeft.models.vit import ATTENTION_KERNELS
    assert ('stock', ) + bench.variants.ATTENTION_KERNELS['vit'] == \
        ATTENTION_KERNELS
    # Swin blocks run the stock attention: nothing to add.
    swin = bench.select_variants(bench.SWIN, ['full', 'lora_swin'])
    tiny = bench.PRESETS['tiny-swin']
    variants, references, notes = bench.add_kernel_references(
        bench.SWIN, bench.preset_backbone_cfg(tiny, tiny.img_size), swin)
    assert [v.name for v in variants] == ['full', 'lora_swin'] and not notes
    assert set(references.values()) == {'full'}


def test_ratios_are_to_the_reference_with_the_same_kernel(tmp_path):
    doc = load_tool('benchmark').main([
        '--preset', 'tiny-vit', '--measure', 'train', '--variants', 'full',
        'lora_vit', '--repeats', '1', '--warmup', '0', '--out',
        str(tmp_path / 'kernels')])
    variants = doc['variants']
    assert list(variants) == ['full', 'full_packed', 'lora_vit']
    assert variants['lora_vit']['reference'] == 'full_packed'
    assert variants['full_packed']['reference'] == 'full'
    for metric in ('train_ms', 'train_peak_mib'):
        assert variants['lora_vit']['ratios'][metric] == pytest.approx(
            variants['lora_vit'][metric] / variants['full_packed'][metric])
    assert variants['full_packed']['backbone_trainable_params'] == \
        variants['full']['backbone_trainable_params']
    assert any('full_packed' in note for note in doc['notes'])
    table = bench.frontier_markdown([doc])
    assert '| lora |' in table and 'of full_packed)' in table


def test_fused_attention_flops_are_counted():
    """FlopAnalyzer has no handle for scaled_dot_product_attention: the
    benchmark adds one, so both kernels count the same attention."""
    import torch

    from mmpeft.benchmark.counts import backbone_gflops
    from mmpeft.models import AdapterVisionTransformer
    arch = dict(img_size=(64, 64), patch_size=8, embed_dims=32,
                num_layers=2, num_heads=2)
    image = torch.randn(1, 3, 64, 64)
    flops = {kernel: backbone_gflops(AdapterVisionTransformer(
        **arch, adapters=dict(), attention=kernel), image)
        for kernel in ('packed', 'sdpa')}
    tokens = 65
    attention = 2 * 2 * tokens * tokens * 32 / 1e9  # q k^T and w v, 2 layers
    assert flops['sdpa'] == pytest.approx(flops['packed'], rel=1e-9)
    assert flops['sdpa'] > attention


def test_frontier_table_joins_the_runs_by_method(tmp_path):
    """One row per method across hosts (lora_swin and lora_vit are lora),
    in the runs' order, three cells per run, ratios as each run measured
    them."""
    import json

    def result(row, trainable, ms, mib, reference='full', ratio=0.5):
        return dict(row=row, backbone_trainable_params=trainable,
                    backbone_params=1e6, train_ms=ms, train_peak_mib=mib,
                    reference=reference,
                    ratios=dict(train_ms=ratio, train_peak_mib=ratio))

    swin = dict(source='swin-t', variants=dict(
        full=result('full', 1e6, 100.0, 50.0, ratio=1.0),
        mona=result('mona', 4e4, 60.0, 20.0),
        lora_swin_last2=result('lora, late blocks', 2e4, 40.0, 10.0,
                               ratio=0.4)))
    vit = dict(source='vit-s', variants=dict(
        full=result('full', 1e6, 200.0, 80.0, ratio=1.0),
        full_sdpa=result('full, sdpa attention', 1e6, 150.0, 40.0,
                         ratio=0.75),
        lora_vit_lasthalf=result('lora, late blocks', 1e4, 90.0, 30.0,
                                 reference='full_packed', ratio=0.45)))
    paths = []
    for doc in (swin, vit):
        paths.append(str(tmp_path / f"{doc['source']}.json"))
        with open(paths[-1], 'w') as f:
            json.dump(doc, f)
    table = load_tool('benchmarks/frontier_table').main(paths).splitlines()
    assert table[0] == ('| method | swin-t trainable | swin-t step ms | '
                        'swin-t peak MiB | vit-s trainable | vit-s step ms '
                        '| vit-s peak MiB |')
    rows = {line.split(' | ')[0][2:]: line for line in table[2:]
            if line.startswith('| ')}
    assert list(rows) == ['full', 'full, sdpa attention', 'mona',
                          'lora, late blocks']
    assert rows['lora, late blocks'] == (
        '| lora, late blocks | 0.020M (2.00%) | 40.0 (0.40x) | 10.0 (0.40x) '
        '| 0.010M (1.00%) | 90.0 (0.45x of full_packed) | '
        '30.0 (0.45x of full_packed) |')
    assert rows['mona'].endswith('| 20.0 (0.50x) |  |  |  |')


def test_host_forms_skip_a_backbone_without_the_host_options(monkeypatch):
    """A method whose backbone does not take adapter_blocks or
    frozen_activations_dtype gets no such form."""
    from mmengine.registry import MODELS

    class NoOptionsBackbone(nn.Module):

        def __init__(self, depth: int = 2, **kwargs):
            super().__init__()

    monkeypatch.setitem(MODELS._module_dict, 'NoOptionsBackbone',
                        NoOptionsBackbone)
    method = methods.Method('stock_probe', 'swin',
                            dict(type='NoOptionsBackbone'), paper='test')
    monkeypatch.setitem(methods.METHODS, method.name, method)
    names = [v.name for v in bench.SWIN.variants
             if v.name.startswith('stock_probe')]
    assert names == [f'stock_probe{f}' for f in FORMS]
    assert 'mona_last2' in {v.name for v in bench.SWIN.variants}
