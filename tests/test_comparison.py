"""tools/compare.py and mmpeft.comparison: which config each method runs,
the generated configs, the table's ratios, resumability, and one real run
through tools/train.py / test.py / count_params.py."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from helpers import REPO_ROOT, tiny_runner_cfg
from mmpeft import comparison as cmp
from mmpeft.comparison import runner as cmp_runner
from mmpeft.methods import METHODS, POLICY_METHODS

SWIN_VOC = 'configs/baselines/fasterrcnn_swinb_voc.py'


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)


def test_parse_methods_orders_and_rejects():
    assert cmp.parse_methods(['all']) == list(cmp.method_names())
    assert cmp.parse_methods(['mona', 'full', 'lora']) == [
        'full', 'lora', 'mona'
    ]
    with pytest.raises(cmp.ComparisonError, match='Unknown method'):
        cmp.parse_methods(['loha'])


def test_method_key_per_host():
    assert cmp.method_key('lora', 'vit') == 'lora_vit'
    assert cmp.method_key('mona', 'swin') == 'mona'
    assert cmp.method_key('mona', 'vit') is None
    assert cmp.method_key('mona', 'dinov2') == 'mona_dinov2'
    assert cmp.method_key('mimi', 'dinov2') is None
    assert cmp.hosts_of('repadapter') == ['vit', 'dinov2']
    assert cmp.hosts_of('bitfit') == ['swin', 'vit', 'dinov2']
    assert cmp.hosts_of('bitfit_orig') == ['swin', 'vit']
    # The comparison's methods are those of mmpeft/methods.py, by their
    # host-free names, the labelled ones first in the labels' order.
    entries = {**METHODS, **POLICY_METHODS}
    names = {k[:-len(e.host) - 1] if k.endswith('_' + e.host) else k
             for k, e in entries.items()}
    assert set(cmp.method_names()) == names
    labelled = [n for n in cmp.LABELS if n in names]
    assert list(cmp.method_names()[:len(labelled)]) == labelled


def test_demo_plan_has_every_method_and_both_reference_rows():
    plan = cmp.demo_plan(['all'])
    keys = [row.key for row in plan.rows]
    assert len(keys) == len(set(keys))
    # Full and Fixed on both hosts: the references of every row.
    assert {'full_swin', 'full_vit', 'fixed_swin', 'fixed_vit',
            'repadapter', 'mona', 'mimi'} <= set(keys)
    shipped = {osp.splitext(f)[0] for f in os.listdir(
        osp.join(REPO_ROOT, 'configs/demo/compare'))}
    assert set(keys) == shipped | {'full_swin', 'full_vit', 'mona'}
    # A method's cheaper forms follow it, labelled by their form.
    assert keys[keys.index('mona') + 1:keys.index('mona') + 3] == [
        'mona_last2', 'mona_bf16saves']
    forms = {r.key: r.label for r in plan.rows if r.form}
    assert forms == {'mona_last2': 'Mona (last 2 stages)',
                     'mona_bf16saves': 'Mona (bf16 saves)'}
    assert [r.key for r in cmp.demo_plan(['mona']).rows] == [
        'full_swin', 'fixed_swin', 'mona', 'mona_last2', 'mona_bf16saves']
    for row in plan.rows:
        assert osp.isabs(row.config) and osp.isfile(row.config), row
        assert row.host == cmp.hosts_of(row.name)[0] or row.is_reference
    assert [p.host for p in plan.pretrains] == ['swin', 'vit']
    assert plan.cwd == REPO_ROOT
    # Only Swin methods: no ViT row, no ViT pretraining.
    swin_only = cmp.demo_plan(['lora'])
    assert [r.key for r in swin_only.rows] == ['full_swin', 'fixed_swin',
                                               'lora_swin']
    assert [p.host for p in swin_only.pretrains] == ['swin']


def test_demo_pretrain_paths_match_the_configs():
    """compare.py places step 1's source model where the demo configs load
    it: the detector's weights (Swin), a bare backbone (ViT); step 1 trains
    from scratch until its validation mAP stops improving."""
    plan = cmp.demo_plan(['all'])
    step1 = {p.host: p for p in plan.pretrains}
    for row in plan.rows:
        init = Config.fromfile(row.config).model.backbone.init_cfg
        assert osp.join(REPO_ROOT, init.checkpoint) == \
            step1[row.host].checkpoint, row
    assert not step1['swin'].backbone_only and step1['vit'].backbone_only
    for host, step in step1.items():
        cfg = Config.fromfile(step.config)
        assert cfg.model.backbone.init_cfg is None  # from scratch
        stop = [h for h in cfg.custom_hooks
                if h['type'] == 'EarlyStoppingHook']
        assert stop and stop[0]['monitor'] == cfg.source_metric
        assert cfg.default_hooks.checkpoint.save_best == cfg.source_metric
        assert cfg.train_cfg.val_interval == \
            cfg.default_hooks.checkpoint.interval
    vit = Config.fromfile(osp.join(REPO_ROOT,
                                   'configs/demo/compare/repadapter.py'))
    assert vit.model.backbone.type == 'RepAdapterViT'
    assert vit.model.backbone.convert_weights is False


def test_demo_method_without_a_demo_config_is_an_error(monkeypatch):
    monkeypatch.setattr(cmp.plan, 'demo_config',
                        lambda key: f'/nowhere/{key}.py')
    with pytest.raises(cmp.ComparisonError, match='LoRA has no demo config'):
        cmp.demo_plan(['lora'])
    assert cmp.demo_plan(['all']).rows == []  # 'all': those that have one


def test_baseline_plan_uses_shipped_configs(tmp_path):
    plan = cmp.baseline_plan(SWIN_VOC, ['lora', 'mona', 'bitfit'],
                             str(tmp_path))
    assert {r.key: osp.relpath(r.config, REPO_ROOT) for r in plan.rows} == {
        'full_swin': SWIN_VOC,
        'fixed_swin': 'configs/fixed/fasterrcnn_swinb_voc.py',
        'lora_swin': 'configs/lora/fasterrcnn_swinb_voc.py',
        'mona': 'configs/mona/fasterrcnn_swinb_voc.py',
        'bitfit_swin': 'configs/bitfit/fasterrcnn_swinb_voc.py',
    }
    with pytest.raises(cmp.ComparisonError, match='RepAdapter has no swin'):
        cmp.baseline_plan(SWIN_VOC, ['repadapter'], str(tmp_path))


@pytest.mark.parametrize('name', ['lora', 'bitfit', 'partial1', 'mimi'])
def test_generated_config_matches_shipped(name, tmp_path):
    """For a baseline the repository ships, the generated config is the
    shipped task config: same backbone, same hooks (MiMi: prune interval
    from the schedule)."""
    cfg = Config.fromfile(SWIN_VOC)
    key = cmp.method_key(name, 'swin')
    path = tmp_path / 'gen.py'
    path.write_text(cmp.generated_config(SWIN_VOC, cfg, name, key))
    generated = Config.fromfile(str(path))
    shipped = Config.fromfile(f'configs/{name}/fasterrcnn_swinb_voc.py')
    assert generated.model.backbone.to_dict() == \
        shipped.model.backbone.to_dict()
    hooks = [dict(h) for h in generated.custom_hooks]
    if name == 'mimi':
        loop = cfg.train_cfg
        length = loop.get('max_epochs') or loop.get('max_iters')
        assert hooks[-1]['interval'] == length // 4
        hooks, shipped_hooks = hooks[:-1], [dict(h) for h in
                                            shipped.custom_hooks][:-1]
    else:
        shipped_hooks = [dict(h) for h in shipped.custom_hooks]
    assert hooks == shipped_hooks


def test_generated_config_keeps_a_user_baseline(tmp_path):
    """A baseline outside configs/baselines gets generated configs that
    keep its pretrained weights, custom_imports and custom_hooks."""
    user = tmp_path / 'my_baseline.py'
    demo_full = osp.join(REPO_ROOT, 'configs/demo/swin_fasterrcnn_voc.py')
    user.write_text(f'_base_ = [{demo_full!r}]\n'
                    "custom_hooks = [dict(type='EmptyCacheHook')]\n")
    plan = cmp.baseline_plan(str(user), ['full', 'adapter', 'normtuning'],
                             str(tmp_path / 'work'))
    configs = {r.key: r.config for r in plan.rows}
    assert configs['full_swin'] == str(user)
    assert set(configs) == {'full_swin', 'fixed_swin', 'adapter_swin',
                            'normtuning_swin'}
    adapter = Config.fromfile(configs['adapter_swin'])
    assert adapter.model.backbone.type == 'AdapterSwinTransformer'
    assert adapter.model.backbone.init_cfg.checkpoint == \
        'work_dirs/demo_source/swin_source.pth'
    assert adapter.model.backbone.convert_weights is False
    assert adapter.model.backbone.embed_dims == 32  # the baseline's Swin
    types = [h['type'] for h in adapter.custom_hooks]
    assert types[0] == 'EmptyCacheHook' and 'PEFTFreezeHook' in types
    assert 'mmpeft' in adapter.custom_imports.imports
    norm = Config.fromfile(configs['normtuning_swin'])
    freeze = [h for h in norm.custom_hooks if h['type'] == 'PEFTFreezeHook']
    assert freeze[0]['train_norms'] is True


def test_host_of_backbone():
    assert cmp.host_of_backbone('SwinTransformer') == 'swin'
    assert cmp.host_of_backbone('mmseg.VisionTransformer') == 'vit'
    assert cmp.host_of_backbone('mmpretrain.VisionTransformer') == 'dinov2'
    assert cmp.host_of_backbone('AdapterPretrainViT') == 'dinov2'
    with pytest.raises(cmp.ComparisonError, match='neither a Swin nor'):
        cmp.host_of_backbone('ResNet')
    # Not mmseg's ViT: hosts of their own, without table entries.
    for name in ('mmpretrain.ViTEVA02', 'AdapterViTSAM'):
        with pytest.raises(cmp.ComparisonError,
                           match='no method-table entries'):
            cmp.host_of_backbone(name)


def test_a_swin_only_preset_on_a_dinov2_baseline_names_its_hosts(tmp_path):
    """MiMi is a Swin preset: on the DINOv2 baseline it has no form, and
    the plan says which hosts it has; Mona has the dinov2 form."""
    baseline = osp.join(REPO_ROOT,
                        'configs/baselines/upernet_dinov2b_ade20k.py')
    with pytest.raises(cmp.ComparisonError,
                       match='MiMi has no dinov2 form .*runs on swin'):
        cmp.baseline_plan(baseline, ['mimi'], str(tmp_path))
    plan = cmp.baseline_plan(baseline, ['mona', 'lora'], str(tmp_path))
    assert [(r.key, osp.abspath(r.config)) for r in plan.rows] == [
        (key, osp.join(REPO_ROOT, config)) for key, config in (
            ('full_dinov2', 'configs/baselines/upernet_dinov2b_ade20k.py'),
            ('fixed_dinov2', 'configs/fixed/upernet_dinov2b_ade20k.py'),
            ('lora_dinov2', 'configs/lora/upernet_dinov2b_ade20k.py'),
            ('mona_dinov2', 'configs/mona/upernet_dinov2b_ade20k.py'))]


def test_step_stats_skips_the_warmup_window():
    records = [dict(loss=1, time=9.0), dict(loss=1, time=1.0),
               dict(loss=1, time=3.0), dict(loss=1, time=2.0)]
    assert cmp.step_stats(records) == dict(step_time_s=2.0,
                                           gpu_memory_mib=None)
    gpu = [dict(loss=1, time=1.0, memory=100), dict(loss=1, time=1.0,
                                                    memory=300)]
    assert cmp.step_stats(gpu)['gpu_memory_mib'] == 300


def fake_result(row, metric, step, rss, latency, pct, seed=0):
    return dict(
        vars(row), label=row.label, seed=seed, lr=1e-3,
        metrics={'pascal_voc/mAP': metric}, metric='pascal_voc/mAP',
        trainable_params=int(pct * 10), trainable_pct=pct, task_file_mib=1.0,
        step_time_s=step, gpu_memory_mib=None, peak_rss_mib=rss,
        latency=dict(median_ms=latency),
        conditions=dict(parallel=[2], threads='1', gpus=0, load_mean=2.0))


def test_table_ratios_are_to_full_of_the_same_host():
    plan = cmp.demo_plan(['full', 'lora', 'repadapter'])
    rows = {r.key: r for r in plan.rows}
    results = {
        'full_swin': fake_result(rows['full_swin'], .5, 2.0, 1000, 10, 100),
        'lora_swin': fake_result(rows['lora_swin'], .4, 1.0, 500, 10, 2),
        'full_vit': fake_result(rows['full_vit'], .3, 4.0, 800, 20, 100),
        'repadapter': fake_result(rows['repadapter'], .2, 3.0, 400, 10, 1),
    }
    doc = cmp.table_doc(plan, {k: {0: r} for k, r in results.items()},
                        {'mimi': 'training failed'})
    by_key = {r['key']: r for r in doc['rows']}
    assert by_key['lora_swin']['step_time_vs_full'] == pytest.approx(0.5)
    assert by_key['lora_swin']['memory_vs_full'] == pytest.approx(0.5)
    assert by_key['repadapter']['step_time_vs_full'] == pytest.approx(0.75)
    assert by_key['repadapter']['latency_vs_full'] == pytest.approx(0.5)
    assert by_key['lora_swin']['vs_full']['diff'] == pytest.approx(-.1)
    assert by_key['lora_swin']['vs_fixed'] is None  # no Fixed row here
    text = cmp.markdown(doc)
    assert '| LoRA | swin | 0.001 | 0.400 | 1 | - | -0.100 (n=1) |' in text
    assert '(0.50x)' in text and 'failed: training failed' in text


def test_latency_remeasures_a_host_as_a_whole(tmp_path, monkeypatch):
    """One row of a host lacks its latency: every row of that host is timed
    again, together, in one process (ratios come from one run), on each
    row's first seed."""
    plan = cmp.demo_plan(['lora'])
    results = {}
    for row in plan.rows:
        (tmp_path / row.key).mkdir()
        results[row.key] = {s: dict(seed=s, lr=1e-3,
                                    deploy_config=f'{row.key}{s}.py',
                                    deploy_checkpoint=f'{row.key}{s}.pth')
                            for s in (1, 0)}
    (tmp_path / 'full_swin' / 'latency.json').write_text(json.dumps(
        dict(median_ms=1, run=dict(seed=0, lr=1e-3))))
    calls = []

    def fake_run(cmd, log, what, progress=None, cwd=None):
        calls.append(cmd)
        out = cmd[cmd.index('--json') + 1]
        with open(out, 'w') as f:
            json.dump([dict(median_ms=10.0 + i) for i in range(3)], f)
        return dict(peak_rss_mib=1, wall_s=1, load_mean=0, load_max=0)

    monkeypatch.setattr(cmp_runner, 'run_logged', fake_run)
    comparison = cmp.Comparison(plan, str(tmp_path), echo=lambda _: None)
    assert comparison.latencies(results) == {}
    assert len(calls) == 1
    assert calls[0][calls[0].index('mmpeft.comparison.latency') + 1:][:6] == [
        'full_swin0.py', 'full_swin0.pth', 'fixed_swin0.py',
        'fixed_swin0.pth', 'lora_swin0.py', 'lora_swin0.pth']
    assert results['full_swin'][1]['latency']['median_ms'] == 10.0
    assert results['lora_swin'][0]['latency']['median_ms'] == 12.0
    assert comparison.latencies(results) == {} and len(calls) == 1


DEMO_ROWS = [r for r in cmp.demo_plan(['all']).rows if r.name != 'full']


@pytest.mark.parametrize('row', DEMO_ROWS, ids=lambda r: r.key)
def test_demo_config_step_moves_only_what_the_method_trains(
        row, demo_data, tmp_path):
    """One training step of each demo table config (its own tiny model,
    no pretrained file): the backbone weights that moved are the method's
    (its adapters, or its policy's part), and some did (Fixed: none)."""
    import torch
    from mmengine.runner import Runner

    from mmpeft.engine.peft_freeze_hook import (FreezePolicy, policy_flags,
                                                policy_from_config)
    from test_hooks import Snapshot
    cfg = tiny_runner_cfg(osp.join(REPO_ROOT, row.config), demo_data,
                          tmp_path, max_iters=1, img_scale=(128, 96))
    cfg.optim_wrapper.optimizer.lr = 1e-2
    cfg.custom_hooks = [h for h in cfg.custom_hooks
                        if h['type'] != 'MiMiPruneHook']
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    runner = Runner.from_cfg(cfg)
    snapshot = Snapshot()
    runner.register_hook(snapshot)
    runner.train()
    model = runner.model
    flags = policy_flags(model, policy_from_config(cfg) or FreezePolicy())
    trains = {n[len('backbone.'):] for n, t in flags.items()
              if t and n.startswith('backbone.')}
    after = dict(model.backbone.named_parameters())
    moved = {n for n in after if not torch.equal(after[n], snapshot.params[n])}
    assert {n for n, p in after.items() if p.requires_grad} == trains
    assert moved <= trains, sorted(moved - trains)[:8]
    assert (moved != set()) == (row.name != 'fixed')


def test_help():
    out = subprocess.run([sys.executable, 'tools/compare.py', '--help'],
                         capture_output=True, text=True, check=True).stdout
    assert 'usage:' in out and '--methods' in out and '--gpus' in out


def test_unknown_method_exits_with_the_choices():
    result = subprocess.run(
        [sys.executable, 'tools/compare.py', 'demo', '--methods', 'loha'],
        capture_output=True, text=True)
    assert result.returncode != 0
    assert 'Unknown method' in result.stderr and 'lorand' in result.stderr


def test_dist_commands_get_a_port_each(monkeypatch):
    """--gpus runs tools/dist_train.sh / dist_test.sh; --jobs puts several
    side by side, so every tool run rendezvouses on its own port."""
    monkeypatch.setenv('PORT', '30000')
    comparison = cmp.Comparison(cmp.demo_plan(['lora']), 'unused')
    assert [comparison.port() for _ in range(3)] == [30000, 30001, 30002]
    cmd = cmp.train_command('c.py', 'wd', 8, 30001, ['a=1'])
    assert cmd[:5] == ['env', 'PORT=30001', f'PYTHON={sys.executable}',
                       'bash', cmp.tool('dist_train.sh')]
    assert cmd[5:] == ['c.py', '8', '--work-dir', 'wd', '--resume',
                       '--cfg-options', 'a=1']
    assert cmp.test_command('c.py', 'k.pth', 'wd', 0)[1:] == [
        cmp.tool('test.py'), 'c.py', 'k.pth', '--work-dir', 'wd']


def tiny_baseline(demo_data, tmp_path):
    """The demo's Full config as a two-iteration baseline of a user's."""
    cfg = tiny_runner_cfg(
        osp.join(REPO_ROOT, 'configs/demo/swin_fasterrcnn_voc.py'),
        demo_data, tmp_path / 'unused', max_iters=2)
    cfg.default_hooks.checkpoint.interval = 2
    baseline = str(tmp_path / 'tiny_baseline.py')
    cfg.dump(baseline)
    return baseline


@pytest.mark.slow
def test_compare_under_dist_train(demo_data, tmp_path):
    """--gpus 2 on a machine without CUDA: tools/dist_train.sh and
    dist_test.sh run two gloo processes per method, two methods at once."""
    work = str(tmp_path / 'compare')
    baseline = tiny_baseline(demo_data, tmp_path)
    result = subprocess.run(
        [sys.executable, 'tools/compare.py', baseline, '--methods', 'fixed',
         '--gpus', '2', '--jobs', '2', '--work-dir', work,
         '--latency-iters', '2'],
        capture_output=True, text=True,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, \
        result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.load(open(osp.join(work, 'comparison.json')))
    assert {r['key'] for r in doc['rows']} == {'full_swin', 'fixed_swin'}
    log = open(osp.join(work, 'fixed_swin', 'lr0.001', 'seed0',
                        'train.log')).read()
    assert 'dist_train.sh' in log.splitlines()[0]
    assert all(0 <= r['metric_mean'] <= 1 for r in doc['rows'])


@pytest.mark.slow
def test_compare_runs_the_tools_end_to_end(demo_data, tmp_path):
    """LoRA (with Full and Fixed) on a two-iteration baseline of the demo
    task, run from another directory with --cfg-options: every row trained,
    evaluated merged, counted, timed; the table written; a second run trains
    nothing."""
    baseline = tiny_baseline(demo_data, tmp_path)
    work = str(tmp_path / 'compare')
    cmd = [sys.executable, osp.join(REPO_ROOT, 'tools/compare.py'), baseline,
           '--methods', 'lora', '--work-dir', work,
           '--latency-iters', '2', '--cfg-options',
           'default_hooks.logger.interval=2']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    first = subprocess.run(cmd, capture_output=True, text=True, env=env,
                           cwd=str(elsewhere))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    doc = json.load(open(osp.join(work, 'comparison.json')))
    rows = {r['key']: r for r in doc['rows']}
    assert set(rows) == {'full_swin', 'fixed_swin', 'lora_swin'}
    assert rows['full_swin']['trainable_pct'] == pytest.approx(100)
    assert rows['fixed_swin']['trainable_pct'] == 0
    # The method base's rank 64 on the tiny Swin's 32-256 widths.
    assert 0 < rows['lora_swin']['trainable_pct'] < 100
    lora = rows['lora_swin']['runs']['0']
    assert lora['deploy_checkpoint'].endswith('_deploy.pth')
    dumped = Config.fromfile(osp.join(work, 'lora_swin', 'lr0.001', 'seed0',
                                      'lora_swin.py'))
    assert dumped.default_hooks.logger.interval == 2  # --cfg-options
    assert dumped.randomness.seed == 0
    for r in rows.values():
        assert 0 <= r['metric_mean'] <= 1 and r['n'] == 1
        assert r['step_time_s'] > 0 and r['latency_ms'] > 0
        assert r['memory_mib'] > 100
        assert r['runs']['0']['conditions']['threads'] == '1'
    assert rows['full_swin']['step_time_vs_full'] == pytest.approx(1)
    # The PEFT task file is the adapter checkpoint, far smaller than Full's.
    assert rows['lora_swin']['task_file_mib'] < \
        rows['full_swin']['task_file_mib']
    second = subprocess.run(cmd, capture_output=True, text=True, env=env,
                            cwd=str(elsewhere))
    assert second.returncode == 0
    assert second.stdout.count('done before') == 3
    assert ': training ' not in second.stdout
