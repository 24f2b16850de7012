"""A checkpoint that cannot be read, or does not fit, is an error naming the
file and the cause, on every load path; ``--resume`` without a path falls
back past a broken latest checkpoint.

Broken files (zero bytes, truncated, random bytes, an HTML page) given to
mmengine's loader, ``--resume``, ``tools/test.py``, ``merge_adapters.py``
and ``--adapter``; weights that leave the model partly unloaded; deploy,
training and adapter-only files under the wrong config; a stock-Swin
checkpoint resumed into the Mona config.
"""
import json
import logging
import os.path as osp
import shutil
import sys
import tempfile

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.runner import CheckpointLoader

from checkpoint_support import corrupt_copies, toy_config
from helpers import REPO_ROOT, load_tool
from mmpeft.engine import NotResumableError, check_resumable_file
from mmpeft.engine.checkpoint_io import (CheckpointMismatchError,
                                         CheckpointReadError,
                                         check_optimizer_fits, load_file,
                                         resolve_auto_resume)
from mmpeft.engine.runner import build_runner
from test_reliability_support import (TINY_SWIN, output_tail, run_tool,
                                      tiny_method_cfg)

CAUSES = dict(
    empty='is empty (0 bytes)',
    half='a torch zip archive that is truncated or corrupt',
    head='a torch zip archive that is truncated or corrupt',
    random='not a torch checkpoint',
    html='not a torch checkpoint')


class Warnings(logging.Handler):
    """Collects the warnings of the current MMLogger."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope='module')
def toy_run(tmp_path_factory):
    """The toy config trained for 2 iterations (iter_1.pth, iter_2.pth),
    and broken copies of iter_2.pth."""
    directory = tmp_path_factory.mktemp('toy')
    work_dir = str(directory / 'work')
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(directory))
        config = toy_config(str(directory), work_dir)
        build_runner(Config.fromfile(config)).train()
        broken = corrupt_copies(osp.join(work_dir, 'iter_2.pth'),
                                str(directory))
        yield str(directory), config, work_dir, broken


def toy_cfg(toy_run, **changes):
    _, config, _, _ = toy_run
    cfg = Config.fromfile(config)
    cfg.update(changes)
    return cfg


def copy_work_dir(work_dir, tmp_path):
    """A copy whose last_checkpoint names the copy's iter_2.pth."""
    copy = str(tmp_path / 'work')
    shutil.copytree(work_dir, copy)
    with open(osp.join(copy, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(copy, 'iter_2.pth'))
    return copy


# ------------------------------------------------------- unreadable files
@pytest.mark.parametrize('kind', list(CAUSES))
def test_loader_names_the_file_and_the_cause(kind, toy_run):
    path = toy_run[3][kind]
    with pytest.raises(CheckpointReadError) as error:
        CheckpointLoader.load_checkpoint(path)  # load_from, init_cfg, ...
    message = str(error.value)
    assert repr(path) in message and CAUSES[kind] in message
    assert 'again, or use another checkpoint' in message


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointReadError, match='does not exist'):
        load_file(str(tmp_path / 'nope.pth'))
    with pytest.raises(CheckpointReadError, match='is not a file'):
        load_file(str(tmp_path))


@pytest.mark.parametrize('kind', list(CAUSES))
def test_resume_names_a_broken_file(kind, toy_run, monkeypatch, tmp_path):
    path = toy_run[3][kind]
    with pytest.raises(CheckpointReadError) as error:
        check_resumable_file(path)  # tools/train.py --resume PATH
    assert repr(path) in str(error.value)
    assert CAUSES[kind] in str(error.value)
    if kind == 'half':  # the tool itself, once
        monkeypatch.setenv('LOCAL_RANK', '0')
        monkeypatch.setattr(sys, 'argv', [
            'train.py', toy_run[1], '--resume', path, '--work-dir',
            str(tmp_path / 'work')
        ])
        with pytest.raises(CheckpointReadError, match=CAUSES[kind]):
            load_tool('train').main()


def test_test_tool_names_a_broken_checkpoint(toy_run):
    directory, config, _, broken = toy_run
    proc = run_tool(
        [sys.executable, 'tools/test.py', config, broken['random']],
        pythonpath=[directory])
    log = output_tail(proc)
    assert proc.returncode != 0
    assert 'CheckpointReadError' in log and broken['random'] in log
    assert CAUSES['random'] in log


@pytest.mark.parametrize('kind', ['half', 'empty'])
def test_merge_adapters_names_a_broken_input(kind, toy_run, monkeypatch,
                                             tmp_path):
    path = toy_run[3][kind]
    monkeypatch.setattr(sys, 'argv', [
        'merge_adapters.py', toy_run[1], path,
        str(tmp_path / 'deploy.pth')
    ])
    with pytest.raises(CheckpointReadError) as error:
        load_tool('merge_adapters').main()
    assert repr(path) in str(error.value) and CAUSES[kind] in str(error.value)


def test_bad_adapter_file_is_reported_under_its_own_name(
        toy_run, monkeypatch):
    _, config, work_dir, broken = toy_run
    base = osp.join(work_dir, 'iter_2.pth')
    monkeypatch.setattr(
        sys, 'argv',
        ['test.py', config, base, '--adapter', broken['half']])
    with pytest.raises(CheckpointReadError) as error:
        load_tool('test').main()
    message = str(error.value)
    assert repr(broken['half']) in message and CAUSES['half'] in message
    assert base not in message


# ------------------------------------------------------------ auto-resume
def test_empty_last_checkpoint_resumes_from_the_newest_file(
        toy_run, tmp_path):
    work_dir = copy_work_dir(toy_run[2], tmp_path)
    with open(osp.join(work_dir, 'last_checkpoint'), 'w'):
        pass  # killed while mmengine rewrote it in place
    warnings = Warnings()
    logger = MMLogger.get_current_instance()
    logger.addHandler(warnings)
    try:
        chosen = resolve_auto_resume(work_dir)
    finally:
        logger.removeHandler(warnings)
    assert chosen == osp.join(work_dir, 'iter_2.pth')
    assert any('last_checkpoint is empty' in m for m in warnings.messages)


def test_auto_resume_falls_back_past_a_corrupt_latest_checkpoint(
        toy_run, tmp_path):
    work_dir = copy_work_dir(toy_run[2], tmp_path)
    latest, previous = (osp.join(work_dir, f'iter_{i}.pth') for i in (2, 1))
    shutil.copy(toy_run[3]['half'], latest)  # truncated by a crash
    warnings = Warnings()
    logger = MMLogger.get_current_instance()
    logger.addHandler(warnings)
    try:
        assert resolve_auto_resume(work_dir) == previous
    finally:
        logger.removeHandler(warnings)
    warning, = [m for m in warnings.messages if 'Auto-resume' in m]
    assert latest in warning and previous in warning
    assert 'corrupt since it was written' in warning  # its SHA-256 differs

    cfg = toy_cfg(toy_run, work_dir=work_dir, resume=True, load_from=None)
    cfg.train_cfg.max_iters = 3
    runner = build_runner(cfg)
    assert cfg.load_from == previous
    runner.train()
    assert runner.iter == 3
    assert load_file(latest)['meta']['iter'] == 2  # rewritten, complete


def test_auto_resume_with_nothing_loadable_names_every_file(
        toy_run, tmp_path):
    work_dir = copy_work_dir(toy_run[2], tmp_path)
    for i in (1, 2):
        shutil.copy(toy_run[3]['random'], osp.join(work_dir, f'iter_{i}.pth'))
    with pytest.raises(CheckpointReadError) as error:
        resolve_auto_resume(work_dir)
    message = str(error.value)
    assert 'iter_1.pth' in message and 'iter_2.pth' in message
    assert '--resume PATH' in message


def test_auto_resume_in_an_empty_work_dir_starts_from_scratch(tmp_path):
    assert resolve_auto_resume(str(tmp_path)) is None


# ---------------------------------------------- weights that do not fit
@pytest.mark.parametrize('partial', [False, True])
def test_test_tool_refuses_a_checkpoint_that_leaves_weights_unloaded(
        partial, toy_run, tmp_path):
    """As a user runs it: a checkpoint of another model evaluates a random
    one unless the partial load is asked for."""
    directory, config, _, _ = toy_run
    other = str(tmp_path / 'other.pth')
    torch.save(dict(state_dict={'head.weight': torch.zeros(3)}), other)
    proc = run_tool([
        sys.executable, 'tools/test.py', config, other,
        *(['--allow-partial'] if partial else [])
    ], pythonpath=[directory])
    log = output_tail(proc)
    if partial:
        assert proc.returncode == 0, log
        assert 'mean_output' in json.loads(proc.stdout.splitlines()[-1])
        assert 'Partial load' in log
    else:
        assert proc.returncode != 0
        assert 'CheckpointMismatchError' in log and other in log
        assert ("2 of the model's 2 weights unloaded "
                '(linear.bias, linear.weight)') in log
        assert '1 checkpoint keys the model does not have (head.weight)' in log
        assert '--allow-partial' in log


def test_load_from_with_another_shape_is_an_error(toy_run, tmp_path):
    path = str(tmp_path / 'wider.pth')
    wider = torch.nn.Linear(8, 1)
    torch.save(dict(state_dict={f'linear.{k}': v
                                for k, v in wider.state_dict().items()}),
               path)
    runner = build_runner(toy_cfg(toy_run, load_from=path))
    with pytest.raises(CheckpointMismatchError) as error:
        runner.test()
    assert '1 of another shape (linear.weight: checkpoint (1, 8) vs model ' \
        '(1, 4))' in str(error.value)
    partial = build_runner(
        toy_cfg(toy_run, load_from=path, mmpeft_allow_partial=True))
    assert 'mean_output' in partial.test()  # mmengine skips that weight


def test_optimizer_with_other_parameter_groups_is_not_resumable():
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    saved = dict(param_groups=[dict(params=[0]), dict(params=[1, 2])])
    with pytest.raises(CheckpointMismatchError) as error:
        check_optimizer_fits(optimizer, saved, 'x.pth')
    message = str(error.value)
    assert 'x.pth is not a training checkpoint of this config' in message
    assert '2 parameter groups of [1, 2] parameters' in message
    assert '1 of [2]' in message and 'load_from' in message
    check_optimizer_fits(optimizer, optimizer.state_dict(), 'x.pth')


# --------------------------------------- deploy / training / adapters
@pytest.fixture(scope='module')
def mona_run(demo_data, tmp_path_factory):
    """A one-iteration Mona run with its deploy and adapter-only files
    (the config's AdapterMergeHook), and the config as a file."""
    work_dir = tmp_path_factory.mktemp('mona')
    cfg = tiny_method_cfg('mona', demo_data, work_dir, max_iters=1,
                          validate=True)
    build_runner(cfg.copy()).train()
    config = str(work_dir / 'config.py')
    cfg.dump(config)
    return config, str(work_dir)


def run_test_tool(monkeypatch, *argv):
    """tools/test.py in process. Its runner writes its config into the
    work dir under the config's name: keep it off the files under test."""
    monkeypatch.setenv('LOCAL_RANK', '0')
    work_dir = tempfile.mkdtemp(prefix='test_tool_')
    monkeypatch.setattr(sys, 'argv',
                        ['test.py', *argv, '--work-dir', work_dir])
    load_tool('test').main()


@pytest.mark.parametrize('config,checkpoint,what,fix', [
    ('config.py', 'iter_1_deploy.pth', 'is a deploy checkpoint',
     'deploy config written beside it: {work_dir}/iter_1_deploy.py'),
    ('iter_1_deploy.py', 'iter_1.pth', 'is not a deploy checkpoint',
     '({work_dir}/iter_1_deploy.pth'),
    ('config.py', 'iter_1_adapters.pth', 'is an adapter-only checkpoint',
     '--adapter {work_dir}/iter_1_adapters.pth'),
])
def test_test_tool_refuses_a_file_for_another_config(
        config, checkpoint, what, fix, mona_run, monkeypatch):
    _, work_dir = mona_run
    checkpoint = osp.join(work_dir, checkpoint)
    with pytest.raises(CheckpointMismatchError) as error:
        run_test_tool(monkeypatch, osp.join(work_dir, config), checkpoint)
    message = str(error.value)
    assert f'{checkpoint} {what}' in message
    assert fix.format(work_dir=work_dir) in message


@pytest.mark.parametrize('config,checkpoint,extra', [
    ('config.py', 'iter_1.pth', []),
    ('iter_1_deploy.py', 'iter_1_deploy.pth', []),
    ('config.py', 'iter_1.pth', ['--adapter', 'iter_1_adapters.pth']),
])
def test_test_tool_evaluates_matching_files(config, checkpoint, extra,
                                            mona_run, monkeypatch, capsys):
    _, work_dir = mona_run
    extra = [osp.join(work_dir, e) if e.endswith('.pth') else e
             for e in extra]
    run_test_tool(monkeypatch, osp.join(work_dir, config),
                  osp.join(work_dir, checkpoint), *extra)
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 'pascal_voc/mAP' in metrics


def test_old_deploy_config_without_the_marker_is_recognised(
        mona_run, monkeypatch, tmp_path):
    """Deploy configs written before the marker: known by the
    ``*_deploy.pth`` they load."""
    _, work_dir = mona_run
    old = Config.fromfile(osp.join(work_dir, 'iter_1_deploy.py'))
    assert old.pop('adapters_merged') is True
    config = str(tmp_path / 'old_deploy.py')
    old.dump(config)
    with pytest.raises(CheckpointMismatchError,
                       match='is not a deploy checkpoint'):
        run_test_tool(monkeypatch, config, osp.join(work_dir, 'iter_1.pth'))


def test_resuming_a_stock_swin_checkpoint_into_the_mona_config(
        demo_data, mona_run, tmp_path):
    """A training checkpoint of the stock Swin baseline has no adapters:
    mmengine's own error was 'different number of parameter groups'."""
    stock = tiny_method_cfg('mona', demo_data, str(tmp_path / 'stock'),
                            max_iters=1)
    baseline = Config.fromfile(
        osp.join(REPO_ROOT, 'configs/baselines/fasterrcnn_swinb_voc.py'))
    stock.model.backbone = dict(baseline.model.backbone, **TINY_SWIN,
                                init_cfg=None)
    stock.custom_hooks = []
    build_runner(stock).train()
    path = str(tmp_path / 'stock' / 'iter_1.pth')

    mona = tiny_method_cfg('mona', demo_data, str(tmp_path / 'mona'),
                           max_iters=2)
    mona.update(resume=True, load_from=path)
    with pytest.raises(CheckpointMismatchError) as error:
        build_runner(mona).train()
    message = str(error.value)
    assert f'{path} is not a training checkpoint of' in message
    assert 'attn_adapter' in message  # what it lacks
    assert f'load_from={path}) without --resume' in message
    assert "init_cfg=dict(type='Pretrained'" in message

    # The advice works: a training run loads it, the adapters keep their
    # init. Evaluating the Mona model from it would use untrained adapters.
    mona = tiny_method_cfg('mona', demo_data, str(tmp_path / 'from_stock'),
                           max_iters=1)
    mona.load_from = path
    build_runner(mona.copy()).train()
    with pytest.raises(CheckpointMismatchError, match='attn_adapter'):
        build_runner(mona).load_or_resume()


def test_resume_refuses_an_export_even_without_exact_resume_hook(
        mona_run, tmp_path):
    """CheckpointCheckHook (added by build_runner) does the resumability
    check that ExactResumeHook does for configs that list it."""
    config, work_dir = mona_run
    cfg = Config.fromfile(config)
    cfg.update(work_dir=str(tmp_path), resume=True,
               load_from=osp.join(work_dir, 'iter_1_deploy.pth'))
    with pytest.raises(NotResumableError, match='is a deploy checkpoint'):
        build_runner(cfg).train()


def test_mona_run_files_load_weights_only(mona_run):
    """What a real run writes needs no opt-in: the training checkpoint only
    allow-listed types, the deploy and adapter-only files none at all."""
    from test_checkpoint_security import allowed_names
    _, work_dir = mona_run
    files = {name: osp.join(work_dir, f'iter_1{name}.pth')
             for name in ('', '_deploy', '_adapters')}
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(
        files['']))
    assert needed and needed <= allowed_names(), needed - allowed_names()
    for name in ('_deploy', '_adapters'):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(
            files[name]) == []
        torch.load(files[name], weights_only=True)  # stock torch, too
    assert load_file(files[''])['meta']['iter'] == 1


def test_tools_show_our_errors_alone_and_tracebacks_with_debug(
        monkeypatch, capsys, tmp_path):
    """tools/train.py, test.py and merge_adapters.py run main through
    run_tool: mmpeft's errors (its classes, ValueErrors of its argument
    checks) end the output alone, the traceback goes to the run's log file
    and, with --debug, to the screen; anything else keeps its traceback."""
    from mmpeft.adapters import build_adapter
    from mmpeft.engine.runner import run_tool

    def named():
        raise CheckpointReadError('Checkpoint x.pth is empty (0 bytes).')

    log_file = str(tmp_path / 'run.log')
    MMLogger.get_instance('run_tool_test', log_file=log_file)
    monkeypatch.setattr(sys, 'argv', ['tool.py'])
    with pytest.raises(SystemExit) as exit:
        run_tool(named)
    assert exit.value.code == 1
    assert capsys.readouterr().err == (
        'CheckpointReadError: Checkpoint x.pth is empty (0 bytes).\n'
        '(add --debug for the traceback)\n')
    with open(log_file) as f:
        assert 'Traceback' in f.read()
    with pytest.raises(SystemExit):
        run_tool(lambda: build_adapter(dict(type='Mona', inner_dim=0), 8))
    assert 'inner_dim' in capsys.readouterr().err

    with pytest.raises(KeyError):  # not ours: a bug keeps its traceback
        run_tool(lambda: {}['key'])
    monkeypatch.setattr(sys, 'argv', ['tool.py', '--debug'])
    with pytest.raises(CheckpointReadError):
        run_tool(named)
