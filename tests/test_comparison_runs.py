"""tools/compare.py's runs without training anything: seeds and their
intervals, resuming after a kill, bad result files, the learning-rate knobs,
the conditions each row is measured under, step 1's cache, running from
another directory. ``FakeTools`` stands in for the tool subprocesses and
leaves what each tool leaves (checkpoints and their companions, the
training log's scalars, the metrics line, the parameter table)."""
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys
import threading

import pytest
import torch

from helpers import REPO_ROOT
from mmpeft import comparison as cmp
from mmpeft.comparison import runner as cmp_runner
from mmpeft.comparison import source as cmp_source
from mmpeft.engine.export import companion_paths, save_atomic
from mmpeft.engine.param_table import ADAPTERS

# t(0.975) with 1 degree of freedom, from a t table (not from scipy).
T_975_1DF = 12.7062047


class FakeTools:
    """``run_logged`` for compare's runs: records what ran and writes what
    the real tool would have written. ``metric(key, seed, lr, split)`` is
    each test run's mAP."""

    def __init__(self, metric=None, kill_at=None):
        self.metric = metric or (lambda key, seed, lr, split: 0.5)
        self.kill_at = kill_at  # the n-th training raises KeyboardInterrupt
        self.trained, self.calls = [], []
        self._lock = threading.Lock()

    def __call__(self, cmd, log, what, progress=None, cwd=None):
        with self._lock:
            self.calls.append((list(cmd), cwd))
        os.makedirs(osp.dirname(log), exist_ok=True)
        tool = next((c for c in cmd if c.endswith('.py') or c.endswith(
            '.sh') or c == 'mmpeft.comparison.latency'), '')
        if tool.endswith(('train.py', 'dist_train.sh')):
            self.train(cmd, config=cmd[cmd.index(tool) + 1])
        elif tool.endswith('count_params.py'):
            path = cmd[cmd.index('--json') + 1]
            with open(path, 'w') as f:
                json.dump(dict(groups=[dict(group=ADAPTERS, trainable=40)],
                               denominators=dict(backbone=1000)), f)
        elif tool.endswith(('test.py', 'dist_test.sh')):
            config, ckpt = cmd[cmd.index(tool) + 1:cmd.index(tool) + 3]
            key, lr, seed = run_of(ckpt)
            split = 'val' if config.endswith('val_as_test.py') else 'test'
            with open(log, 'a') as f:
                f.write(json.dumps({'pascal_voc/mAP': self.metric(
                    key, seed, lr, split)}) + '\n')
        elif tool == 'mmpeft.comparison.latency':
            pairs = cmd[cmd.index(tool) + 1:cmd.index('--iters')]
            with open(cmd[cmd.index('--json') + 1], 'w') as f:
                json.dump([dict(median_ms=10.0 + i)
                           for i in range(len(pairs) // 2)], f)
        else:
            raise AssertionError(f'unexpected command {cmd}')
        return dict(peak_rss_mib=500.0, wall_s=1.0, load_mean=1.0,
                    load_max=1.5)

    def train(self, cmd, config):
        work_dir = cmd[cmd.index('--work-dir') + 1]
        options = cmd[cmd.index('--cfg-options') + 1:]
        seed = int(next(o for o in options if o.startswith(
            'randomness.seed=')).split('=')[1])
        with self._lock:
            if self.kill_at is not None and len(self.trained) + 1 == \
                    self.kill_at:
                raise KeyboardInterrupt
            self.trained.append((run_of(work_dir)[0], seed))
        ckpt = osp.join(work_dir, 'iter_2.pth')
        save_atomic(dict(state_dict={'backbone.w': torch.ones(3)}), ckpt)
        paths = companion_paths(ckpt)
        with open(paths['deploy_config'], 'w') as f:
            f.write(f'_base_ = [{config!r}]\n')
        for key in ('deploy', 'adapters'):
            save_atomic(dict(state_dict={'w': torch.ones(2)}), paths[key])
        with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
            f.write(ckpt)
        scalars = osp.join(work_dir, '20260101_000000', 'vis_data')
        os.makedirs(scalars, exist_ok=True)
        with open(osp.join(scalars, 'scalars.json'), 'w') as f:
            for step, t in ((1, 9.0), (2, 0.2 + seed / 100)):
                f.write(json.dumps(dict(loss=1.0, time=t, step=step)) + '\n')

    def options_of(self, tool):
        return [cmd[cmd.index('--cfg-options') + 1:]
                for cmd, _ in self.calls if any(c.endswith(tool) for c in cmd)
                and '--cfg-options' in cmd]


def run_of(path):
    """(row key, lr, seed) of a path inside ``<key>/lr<lr>/seed<seed>/``."""
    key, lr, seed = re.search(r'([^/]+)/lr([^/]+)/seed(\d+)', path).groups()
    return key, float(lr), int(seed)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """FakeTools in place of the subprocesses; step 1 nowhere."""
    tools = FakeTools()
    monkeypatch.setattr(cmp_runner, 'run_logged', tools)
    monkeypatch.setenv('MMPEFT_CACHE', str(tmp_path / 'cache'))
    return tools


def demo(methods, tmp_path, **kwargs):
    plan = cmp.demo_plan(methods)
    plan.pretrains.clear()
    kwargs.setdefault('echo', lambda _: None)
    return cmp.Comparison(plan, str(tmp_path / 'work'), **kwargs)


# ------------------------------------------------------------ seeds, stats
def test_two_seeds_mean_std_interval_match_a_hand_computation(
        fake, tmp_path):
    """LoRA and the references with seeds 0 and 1: the table's mean, std
    and paired 95% interval equal a hand computation from the per-seed
    values of comparison.json."""
    table = {('full_swin', 0): .70, ('full_swin', 1): .76,
             ('fixed_swin', 0): .60, ('fixed_swin', 1): .61,
             ('lora_swin', 0): .66, ('lora_swin', 1): .70}
    fake.metric = lambda key, seed, lr, split: table[key, seed]
    demo(['lora'], tmp_path, seeds=[0, 1]).run()
    doc = json.load(open(tmp_path / 'work' / 'comparison.json'))
    rows = {r['key']: r for r in doc['rows']}
    values = {key: [rows[key]['runs'][s]['metrics']['pascal_voc/mAP']
                    for s in ('0', '1')] for key in rows}
    assert values['lora_swin'] == [.66, .70]  # every seed kept
    a, b = values['lora_swin']
    lora = rows['lora_swin']
    assert lora['n'] == 2
    assert lora['metric_mean'] == pytest.approx((a + b) / 2)
    assert lora['metric_std'] == pytest.approx(abs(a - b) / math.sqrt(2))
    for ref in ('fixed', 'full'):
        d = [x - y for x, y in zip(values['lora_swin'],
                                   values[f'{ref}_swin'])]
        mean = sum(d) / 2
        half = T_975_1DF * (abs(d[0] - d[1]) / math.sqrt(2)) / math.sqrt(2)
        got = lora[f'vs_{ref}']
        assert got['diff'] == pytest.approx(mean)
        assert (got['low'], got['high']) == pytest.approx(
            (mean - half, mean + half))
        assert got['excludes_zero'] == (mean - half > 0 or mean + half < 0)
    # vs Fixed: d = (.06, .09), half = 12.706 * .015 = .19: includes 0.
    assert lora['vs_fixed']['excludes_zero'] is False
    text = open(tmp_path / 'work' / 'comparison.md').read()
    assert f"| LoRA | swin | 0.001 | {(a + b) / 2:.3f} ± " \
        f"{abs(a - b) / math.sqrt(2):.3f} | 2 |" in text
    assert rows['full_swin']['vs_full'] is None


def test_an_interval_that_excludes_zero_is_marked():
    lora = {0: .70, 1: .71, 2: .72}
    fixed = {0: .60, 1: .60, 2: .61}
    d = cmp.paired_difference(lora, fixed)
    assert d['excludes_zero'] and d['low'] > 0 and d['n'] == 3
    assert cmp.t_quantile(2) == pytest.approx(4.3026527, rel=1e-6)
    assert cmp.paired_difference({0: .7}, {0: .6})['low'] is None
    assert cmp.paired_difference({0: .7}, {1: .6}) is None


def test_pareto_front():
    # (cost, metric): b is cheaper and better than a; c costs more but is
    # best; d is dominated by c; e ties b's cost with a lower metric.
    points = [(1.0, .5), (.5, .6), (1.2, .8), (1.3, .7), (.5, .55)]
    assert cmp.pareto_front(points) == [1, 2]


# ------------------------------------------------------------ resume, kill
def test_rerun_after_a_kill_redoes_only_the_missing_pairs(
        monkeypatch, fake, tmp_path):
    """Killed during the 5th training (of 3 rows x 2 seeds): the re-run
    trains exactly the two (method, seed) runs without a result."""
    fake.kill_at = 5
    with pytest.raises(KeyboardInterrupt):
        demo(['lora'], tmp_path, seeds=[0, 1]).run()
    first = list(fake.trained)
    assert len(first) == 4
    # Each finished run kept its result; the table written so far has them.
    doc = json.load(open(tmp_path / 'work' / 'comparison.json'))
    assert sum(r['n'] for r in doc['rows']) == 4
    again = FakeTools()
    monkeypatch.setattr(cmp_runner, 'run_logged', again)
    doc = demo(['lora'], tmp_path, seeds=[0, 1]).run()
    everything = {(k, s) for k in ('full_swin', 'fixed_swin', 'lora_swin')
                  for s in (0, 1)}
    assert set(again.trained) == everything - set(first)
    assert len(again.trained) == 2 and not doc['failures']
    assert all(r['n'] == 2 for r in doc['rows'])
    counts = [c for c, _ in again.calls if c[1].endswith('count_params.py')]
    assert counts == []  # counted once per row, in the first run


def test_a_finished_table_runs_nothing_again(monkeypatch, fake, tmp_path):
    first = demo(['lora'], tmp_path, seeds=[0, 1]).run()

    def must_not_run(cmd, *args, **kwargs):
        raise AssertionError(f'ran {cmd}')

    monkeypatch.setattr(cmp_runner, 'run_logged', must_not_run)
    again = demo(['lora'], tmp_path, seeds=[0, 1]).run()
    assert [r['metric_values'] for r in again['rows']] == [
        {int(k): v for k, v in r['metric_values'].items()}
        for r in first['rows']]
    for ext in ('md', 'json', 'png'):
        assert (tmp_path / 'work' / f'comparison.{ext}').stat().st_size > 0


@pytest.mark.parametrize('content', ['', '{"metrics": {"pascal_v', '{}',
                                     '[1, 2]'],
                         ids=['empty', 'truncated', 'empty-object', 'list'])
def test_a_bad_result_file_is_run_again_not_fatal(content, fake, tmp_path):
    """A result.json that is empty, truncated, {} or not an object: that
    run is trained again (its file named in the output), the others are
    not, and the table is written anew."""
    demo(['lora'], tmp_path).run()
    bad = tmp_path / 'work' / 'lora_swin' / 'lr0.001' / 'seed0'
    (bad / 'result.json').write_text(content)
    (tmp_path / 'work' / 'comparison.md').write_text('stale')
    said = []
    fake.trained.clear()
    doc = demo(['lora'], tmp_path, echo=said.append).run()
    assert fake.trained == [('lora_swin', 0)]
    assert any(str(bad / 'result.json') in s and 'running it again' in s
               for s in said)
    assert not doc['failures'] and len(doc['rows']) == 3
    assert '| LoRA | swin |' in (tmp_path / 'work' / 'comparison.md'
                                 ).read_text()


def test_a_failed_run_is_reported_and_the_others_go_on(fake, tmp_path):
    def metric(key, seed, lr, split):
        if key == 'lora_swin' and seed == 1:
            raise cmp.StepFailed('lora_swin seed 1 testing failed; see x')
        return .5
    fake.metric = metric
    doc = demo(['lora'], tmp_path, seeds=[0, 1]).run()
    assert list(doc['failures']) == ['lora_swin seed 1 lr 0.001']
    rows = {r['key']: r for r in doc['rows']}
    assert rows['lora_swin']['n'] == 1 and rows['full_swin']['n'] == 2
    assert '(n=1)' in cmp.markdown(doc)  # no interval from one seed


def test_runs_made_with_other_settings_are_refused(fake, tmp_path):
    """A work dir's runs are not reused or overwritten under other
    --cfg-options: an error names them before anything runs."""
    demo(['lora'], tmp_path).run()
    fake.trained.clear()
    with pytest.raises(cmp.ComparisonError, match='other settings.*'
                       'cfg_options'):
        demo(['lora'], tmp_path,
             cfg_options=['train_cfg.max_iters=3']).run()
    assert fake.trained == []


# ------------------------------------------------------- the user's knobs
def test_cfg_options_and_lr_reach_every_run(fake, tmp_path):
    doc = demo(['lora'], tmp_path, cfg_options=['train_cfg.max_iters=3'],
               lrs={'lora': 3e-4}).run()
    for tool in ('train.py', 'test.py', 'count_params.py'):
        options = fake.options_of(tool)
        assert options and all('train_cfg.max_iters=3' in o
                               for o in options), tool
    lrs = {o for opts in fake.options_of('train.py') for o in opts
           if o.startswith('optim_wrapper.optimizer.lr=')}
    assert lrs == {'optim_wrapper.optimizer.lr=0.0003',
                   'optim_wrapper.optimizer.lr=0.001'}
    rows = {r['key']: r for r in doc['rows']}
    assert rows['lora_swin']['lr'] == [3e-4] and rows['full_swin']['lr'] == [
        1e-3]
    assert '| LoRA | swin | 0.0003 |' in cmp.markdown(doc)
    with pytest.raises(cmp.ComparisonError, match="--lr names \\['loha'\\]"):
        demo(['lora'], tmp_path, lrs={'loha': 1e-3}).check()


def test_lr_grid_chooses_on_the_validation_split(fake, tmp_path):
    """Each row tries every factor with the first seed, scored on the
    validation split; the best one trains every seed and the table says
    so. The test split plays no part in the choice."""
    def metric(key, seed, lr, split):
        if split == 'test':  # would pick 3e-4 if the test split were used
            return .9 if lr == pytest.approx(3e-4) else .5
        return .8 if lr == pytest.approx(3e-3) else .6
    fake.metric = metric
    doc = demo(['lora'], tmp_path, seeds=[0, 1], lr_grid=[.3, 1, 3]).run()
    grid = doc['grid']['lora_swin']
    assert grid['chosen_lr'] == pytest.approx(3e-3)
    assert grid['val_metric'] == [[pytest.approx(3e-4), .6],
                                  [pytest.approx(1e-3), .6],
                                  [pytest.approx(3e-3), .8]]
    rows = {r['key']: r for r in doc['rows']}
    assert rows['lora_swin']['lr'] == [pytest.approx(3e-3)]
    assert rows['lora_swin']['seeds'] == [0, 1]
    assert '(grid)' in cmp.markdown(doc)
    # 3 rows x 3 factors on seed 0, then seed 1 at each chosen lr.
    assert len(fake.trained) == 9 + 3


def test_lr_grid_is_refused_when_validation_is_the_test_split(tmp_path):
    plan = cmp.baseline_plan(
        osp.join(REPO_ROOT, 'configs/baselines/fasterrcnn_swinb_voc.py'),
        ['lora'], str(tmp_path))
    with pytest.raises(cmp.ComparisonError,
                       match='read the same data.*tune on the test set'):
        cmp.Comparison(plan, str(tmp_path), lr_grid=[.5, 1, 2]).check()


def test_validation_split_apart_from_the_test_split():
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO_ROOT,
                                   'configs/demo/swin_fasterrcnn_voc.py'))
    assert cmp.validation_split_error(cfg, 'demo') is None
    # Same data, another pipeline: still the same split.
    cfg.val_dataloader.dataset = dict(cfg.test_dataloader.dataset,
                                      pipeline=[])
    assert 'read the same data' in cmp.validation_split_error(cfg, 'demo')


# ---------------------------------------------------------- conditions
def test_each_training_records_how_many_ran_beside_it(monkeypatch,
                                                      tmp_path):
    """Two tool runs meeting at a barrier: the first saw 1 then 2 at
    work, the second 2; one alone sees 1."""
    barrier = threading.Barrier(2)

    def tool_run(cmd, log, what, progress=None, cwd=None):
        if cmd[0] == 'pair':
            barrier.wait(timeout=10)
        return dict(peak_rss_mib=1, wall_s=1, load_mean=0, load_max=0)

    monkeypatch.setattr(cmp_runner, 'run_logged', tool_run)
    comparison = demo(['lora'], tmp_path)
    seen = {}

    def one(name):
        seen[name] = comparison._tool(name, ['pair'], 'log', name)
    threads = [threading.Thread(target=one, args=(n, )) for n in 'ab']
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(seen[n]['parallel'] for n in 'ab') == [[1, 2], [2]]
    assert comparison._tool('c', ['alone'], 'log', 'c')['parallel'] == [1]


def test_rows_trained_under_other_conditions_than_full_are_marked(
        fake, tmp_path):
    """Full trained two at a time at load 2, LoRA alone at load 0.4: LoRA's
    step time is marked and the difference named; Fixed, trained like
    Full, is not."""
    demo(['lora'], tmp_path).run()
    work = tmp_path / 'work'
    for key, parallel, load in (('full_swin', [1, 2], 2.0),
                                ('fixed_swin', [1, 2], 2.3),
                                ('lora_swin', [1], .4)):
        path = work / key / 'lr0.001' / 'seed0' / 'result.json'
        result = json.loads(path.read_text())
        result['conditions'].update(parallel=parallel, load_mean=load)
        path.write_text(json.dumps(result))
    doc = demo(['lora'], tmp_path).run()
    rows = {r['key']: r for r in doc['rows']}
    assert rows['fixed_swin']['conditions_differ'] == []
    assert rows['lora_swin']['conditions_differ'] == [
        'tool runs at once [1] (Full: [1, 2])', 'host load 0.4 (Full: 2.0)']
    text = cmp.markdown(doc)
    assert text.count(' †') == 1 and '† LoRA (swin) trained under other' \
        in text


# ------------------------------------------------------ another directory
def test_compare_from_another_directory(monkeypatch, fake, tmp_path):
    """From any directory the demo's configs resolve from the repository
    and its tools run there (the configs' data and checkpoints are relative
    to it); a work dir given relative to the caller lands under the
    caller's directory."""
    monkeypatch.chdir(tmp_path)
    plan = cmp.demo_plan(['lora'])
    assert all(osp.isabs(r.config) and osp.isfile(r.config)
               for r in plan.rows)
    plan.pretrains.clear()
    cmp.Comparison(plan, 'rel_work', echo=lambda _: None).run()
    assert (tmp_path / 'rel_work' / 'comparison.md').exists()
    assert {cwd for _, cwd in fake.calls} == {REPO_ROOT}


def test_compare_refuses_at_start_with_one_line(tmp_path):
    """A baseline path that does not exist from the caller's directory:
    one line, before anything runs."""
    result = subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'tools', 'compare.py'),
         'configs/baselines/fasterrcnn_swinb_voc.py', '--methods', 'lora'],
        capture_output=True, text=True, cwd=str(tmp_path))
    assert result.returncode != 0
    assert result.stderr.strip().count('\n') == 0, result.stderr
    assert 'is not a file' in result.stderr and str(tmp_path) in \
        result.stderr


def test_demo_without_its_data_refuses_with_the_command(monkeypatch,
                                                        tmp_path):
    monkeypatch.setattr(cmp.plan, 'DEMO_DATA', str(tmp_path / 'nothing'))
    assert 'python tools/make_demo_data.py --out data/demo' in \
        cmp.demo_data_error()


# --------------------------------------------------------------- step 1
def step1_config(demo_data, tmp_path):
    """The demo's step 1 on the generated data of the test session."""
    path = tmp_path / 'step1.py'
    coco = osp.join(demo_data, 'coco') + '/'
    path.write_text(
        f"_base_ = [{osp.join(REPO_ROOT, 'configs/demo/swin_fasterrcnn_coco.py')!r}]\n"  # noqa: E501
        f'train_dataloader = dict(dataset=dict(data_root={coco!r}))\n'
        f'val_dataloader = dict(dataset=dict(data_root={coco!r}))\n')
    return str(path)


class FakeStep1:
    """tools/train.py of step 1: a best checkpoint and a validation curve."""

    def __init__(self):
        self.runs = 0

    def __call__(self, cmd, log, what, progress=None, cwd=None):
        self.runs += 1
        work_dir = cmd[cmd.index('--work-dir') + 1]
        os.makedirs(work_dir, exist_ok=True)
        save_atomic(dict(state_dict={'backbone.w': torch.ones(2),
                                     'neck.w': torch.ones(1)}),
                    osp.join(work_dir, 'best_coco_bbox_mAP_iter_500.pth'))
        vis = osp.join(work_dir, '20260101_000000', 'vis_data')
        os.makedirs(vis, exist_ok=True)
        with open(osp.join(vis, 'scalars.json'), 'w') as f:
            for step, value in ((250, .4), (500, .6), (750, .59)):
                f.write(json.dumps({'coco/bbox_mAP': value, 'step': step})
                        + '\n')
        return dict(peak_rss_mib=1, wall_s=1, load_mean=0, load_max=0)


def test_step1_is_cached_by_config_and_data(monkeypatch, demo_data,
                                            tmp_path):
    monkeypatch.setenv('MMPEFT_CACHE', str(tmp_path / 'cache'))
    config = step1_config(demo_data, tmp_path)
    step = cmp.Pretrain('swin', config, str(tmp_path / 'src' / 'swin.pth'),
                        False)
    train = FakeStep1()
    manifest = cmp.ensure_source(step, train, lambda _: None)
    assert train.runs == 1
    assert manifest['curve'] == [[250, .4], [500, .6], [750, .59]]
    assert manifest['best'] == dict(iteration=500, value=.6)
    state = torch.load(step.checkpoint, weights_only=True)['state_dict']
    assert set(state) == {'backbone.w', 'neck.w'}
    # Again: reused, also when the placed copy is gone (from the cache).
    os.remove(step.checkpoint)
    assert cmp.ensure_source(step, train, lambda _: None) == manifest
    assert train.runs == 1 and osp.isfile(step.checkpoint)
    # The ViT's bare backbone from the same run.
    bare = cmp.Pretrain('vit', config, str(tmp_path / 'src' / 'vit.pth'),
                        True)
    cmp.ensure_source(bare, FakeStep1(), lambda _: None)
    assert set(torch.load(bare.checkpoint, weights_only=True)[
        'state_dict']) == {'w'}
    # Other annotations: another key, trained again.
    key = cmp.source_key(config)
    ann = osp.join(demo_data, 'coco', 'annotations', 'instances_val2017.json')
    data = json.load(open(ann))
    try:
        json.dump(dict(data, info=dict(version=-1)), open(ann, 'w'))
        assert cmp.source_key(config) != key
    finally:
        json.dump(data, open(ann, 'w'))
    assert cmp.source_key(config) == key


def test_step1_left_without_its_checkpoint_is_trained_again(
        monkeypatch, demo_data, tmp_path):
    """A killed step 1: the file the configs load is there but truncated
    (no manifest), and the cached training's last_checkpoint names a file
    that is gone. It is trained again (from the start), not skipped."""
    monkeypatch.setenv('MMPEFT_CACHE', str(tmp_path / 'cache'))
    config = step1_config(demo_data, tmp_path)
    step = cmp.Pretrain('swin', config, str(tmp_path / 'src' / 'swin.pth'),
                        False)
    os.makedirs(osp.dirname(step.checkpoint))
    with open(step.checkpoint, 'wb') as f:
        f.write(b'PK\x03\x04 truncated')
    train_dir = osp.join(cmp_source.cache_root(), 'demo_source',
                         f'swin-{cmp.source_key(config)}', 'train')
    os.makedirs(train_dir)
    with open(osp.join(train_dir, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(train_dir, 'iter_750.pth'))
    said, train = [], FakeStep1()
    cmp.ensure_source(step, train, said.append)
    assert train.runs == 1
    assert not osp.exists(osp.join(train_dir, 'last_checkpoint'))
    assert any('cannot be resumed from' in s for s in said)
    assert torch.load(step.checkpoint, weights_only=True)['state_dict']
