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
