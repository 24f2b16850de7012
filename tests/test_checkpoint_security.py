"""Checkpoints are untrusted input: no load path runs pickled code.

A malicious checkpoint's payload (``os.system('touch MARKER')`` via
``__reduce__``) must not run through any way mmpeft reads a file:
mmengine's ``CheckpointLoader`` (pretrained ``init_cfg``), ``load_from``
through the Runner, ``--resume`` (explicit and automatic), ``tools/test.py``
(main checkpoint and ``--adapter``), ``tools/merge_adapters.py`` and the
converters. The first test shows that the payload does run when unpickled,
so each "marker absent" is a real check. Legacy full pickles load only with
the opt-in; mmpeft's own training checkpoints load without it.
"""
import glob
import os.path as osp
import pickle
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import HistoryBuffer
from mmengine.registry import MODELS
from mmengine.runner import CheckpointLoader, Runner, load_checkpoint

from checkpoint_support import (Reduce, assert_error_shown, history_buffer,
                                numpy_array, toy_config, with_message_hub,
                                write_malicious)
from helpers import load_tool
from mmpeft.engine import check_resumable_file
from mmpeft.engine.checkpoint_io import (OPT_IN_KEYS, CheckpointReadError,
                                         UnsafeCheckpointError, load_file,
                                         pickle_allowed, resolve_auto_resume,
                                         safe_types, set_allow_pickle,
                                         set_opt_in)
from mmpeft.engine.export import build_from_config, deploy_config, deploy_model
from mmpeft.engine.runner import build_runner, load_config
from peft_tiny import repadapter_seg_cfg
from test_reliability_support import TINY_SWIN, output_tail, run_tool

TINY_VIT = dict(embed_dims=64, num_layers=2, num_heads=2, img_size=(64, 64))


@pytest.fixture
def marker(tmp_path):
    """Where the payload would write; checked after every test."""
    path = str(tmp_path / 'PAYLOAD_RAN')
    yield path
    assert not osp.exists(path), 'the malicious payload ran'


@pytest.fixture
def evil(tmp_path, marker):
    return write_malicious(str(tmp_path / 'evil.pth'), marker)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A toy config (importable model, data, metric) and its work dir."""
    monkeypatch.syspath_prepend(str(tmp_path))
    work_dir = str(tmp_path / 'work')
    return toy_config(str(tmp_path), work_dir), work_dir


def assert_refused(error, path):
    message = str(error)
    assert path in message
    assert 'pickled Python objects or code' in message
    assert 'posix.system' in message  # what was refused
    assert '--allow-pickle' in message and 'mmpeft_allow_pickle' in message


# ---------------------------------------------------------------- payload
def test_the_payload_runs_when_unpickled(tmp_path):
    """Without this the marker tests below would prove nothing."""
    marker = str(tmp_path / 'PAYLOAD_RAN')
    path = write_malicious(str(tmp_path / 'evil.pth'), marker)
    torch.load(path, weights_only=False)
    assert osp.exists(marker)


# ------------------------------------------------------ load paths refuse
def test_checkpoint_loader_refuses(evil, marker):
    with pytest.raises(UnsafeCheckpointError) as error:
        CheckpointLoader.load_checkpoint(evil, map_location='cpu')
    assert_refused(error.value, evil)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(torch.nn.Linear(4, 1), evil)  # mmengine's helper


@pytest.mark.parametrize('backbone', [
    dict(type='MonaSwinTransformer', **TINY_SWIN),
    dict(type='mmdet.SwinTransformer', **TINY_SWIN),
    dict(type='RepAdapterViT', convert_weights=True, **TINY_VIT),
])
def test_pretrained_init_cfg_refuses(backbone, evil, marker):
    """init_cfg=dict(type='Pretrained'): the downloaded-backbone path
    (RepAdapterViT's convert_weights reads the file itself)."""
    # ConfigDict as from a config file (mmdet's Swin reads init_cfg.checkpoint)
    model = MODELS.build(
        dict(backbone,
             init_cfg=ConfigDict(type='Pretrained', checkpoint=evil)))
    with pytest.raises(UnsafeCheckpointError) as error:
        model.init_weights()
    assert_refused(error.value, evil)


@pytest.mark.parametrize('build', ['build_runner', 'Runner.from_cfg'])
def test_load_from_through_the_runner_refuses(build, toy, evil, marker):
    config, _ = toy
    cfg = Config.fromfile(config)
    cfg.load_from = evil
    runner = build_runner(cfg) if build == 'build_runner' else \
        Runner.from_cfg(cfg)
    with pytest.raises(UnsafeCheckpointError) as error:
        runner.test()
    assert_refused(error.value, evil)


def test_resume_refuses(toy, evil, marker, monkeypatch, tmp_path):
    config, work_dir = toy
    with pytest.raises(UnsafeCheckpointError) as error:
        check_resumable_file(evil)  # tools/train.py --resume PATH
    assert_refused(error.value, evil)

    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setattr(sys, 'argv', ['train.py', config, '--resume', evil])
    with pytest.raises(UnsafeCheckpointError):
        load_tool('train').main()
    assert not osp.exists(work_dir)  # refused before anything ran

    cfg = Config.fromfile(config)
    cfg.update(resume=True, load_from=evil)
    with pytest.raises(UnsafeCheckpointError):
        Runner.from_cfg(cfg).train()  # the Runner's resume itself


def test_auto_resume_refuses(tmp_path, marker):
    """--resume without a path: the file last_checkpoint names."""
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    evil = write_malicious(str(work_dir / 'iter_2.pth'), marker)
    (work_dir / 'last_checkpoint').write_text(evil)
    with pytest.raises(CheckpointReadError) as error:
        resolve_auto_resume(str(work_dir))
    assert_refused(error.value, evil)


@pytest.mark.parametrize('where', ['checkpoint', 'adapter'])
def test_test_tool_refuses(where, toy, evil, marker, tmp_path):
    """tools/test.py as a user runs it; ``--adapter`` is read by
    AdapterLoadHook and must be reported under its own name."""
    config, work_dir = toy
    good = str(tmp_path / 'good.pth')
    torch.save(dict(state_dict=torch.nn.Linear(4, 1).state_dict()), good)
    args = [evil] if where == 'checkpoint' else [good, '--adapter', evil]
    proc = run_tool([sys.executable, 'tools/test.py', config, *args],
                    pythonpath=[str(tmp_path)])
    log = output_tail(proc)
    assert proc.returncode != 0, log
    assert 'UnsafeCheckpointError' in log
    assert_refused(log, evil)


def test_merge_adapters_refuses(toy, evil, marker, monkeypatch, tmp_path):
    config, _ = toy
    monkeypatch.setattr(
        sys, 'argv',
        ['merge_adapters.py', config, evil, str(tmp_path / 'out.pth')])
    with pytest.raises(UnsafeCheckpointError) as error:
        load_tool('merge_adapters').main()
    assert_refused(error.value, evil)


def test_converters_refuse(evil, marker, monkeypatch, tmp_path):
    with pytest.raises(UnsafeCheckpointError) as error:
        load_tool('convert_mona_official').main(
            [evil, str(tmp_path / 'mona.pth')])
    assert_refused(error.value, evil)
    monkeypatch.setattr(
        sys, 'argv', ['convert_timm_vit.py', evil,
                      str(tmp_path / 'vit.pth')])
    with pytest.raises(UnsafeCheckpointError):
        load_tool('convert_timm_vit').main()
    assert not osp.exists(tmp_path / 'mona.pth')
    assert not osp.exists(tmp_path / 'vit.pth')


# ------------------------------------------------- legacy pickles: opt-in
LEGACY_SOURCE = '''
class LegacyConfig(dict):
    """Stands for mmcv 1.x objects pickled into an old checkpoint."""
'''


@pytest.fixture
def legacy(tmp_path, monkeypatch):
    """A full pickle: meta holds an instance of a class (as mmcv 1.x
    checkpoints hold mmcv objects); the weights are an official Mona
    whole-model checkpoint's layout for the converter."""
    (tmp_path / 'legacy_objects.py').write_text(LEGACY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    from legacy_objects import LegacyConfig
    from test_convert_mona import TINY, official_mona_backbone
    state = {f'backbone.{k}': v
             for k, v in official_mona_backbone(**TINY).items()}
    path = str(tmp_path / 'legacy.pth')
    torch.save(dict(meta=dict(config=LegacyConfig(lr=0.1)), state_dict=state),
               path)
    return path


def test_legacy_pickle_needs_the_opt_in(legacy):
    with pytest.raises(UnsafeCheckpointError) as error:
        CheckpointLoader.load_checkpoint(legacy)
    assert 'legacy_objects.LegacyConfig' in str(error.value)
    assert '--allow-pickle' in str(error.value)
    set_allow_pickle(True)
    checkpoint = CheckpointLoader.load_checkpoint(legacy)
    assert checkpoint['meta']['config'] == dict(lr=0.1)


def test_allow_pickle_flag_converts_a_legacy_file_to_a_safe_one(
        legacy, tmp_path):
    dst = str(tmp_path / 'converted.pth')
    convert = load_tool('convert_mona_official')
    with pytest.raises(UnsafeCheckpointError):
        convert.main([legacy, dst])
    convert.main([legacy, dst, '--allow-pickle'])
    assert pickle_allowed()
    set_allow_pickle(False)
    converted = load_file(dst)  # weights_only, no opt-in
    assert any('.attn_adapter.' in k for k in converted['state_dict'])


def test_train_tool_loads_a_legacy_file_with_allow_pickle(
        legacy, toy, monkeypatch, tmp_path):
    from legacy_objects import LegacyConfig
    config, _ = toy
    path = str(tmp_path / 'legacy_toy.pth')
    state = {f'linear.{k}': v
             for k, v in torch.nn.Linear(4, 1).state_dict().items()}
    torch.save(dict(meta=dict(config=LegacyConfig()), state_dict=state), path)
    monkeypatch.setenv('LOCAL_RANK', '0')
    argv = ['train.py', config, '--cfg-options', f'load_from={path}',
            '--work-dir', str(tmp_path / 'work')]
    monkeypatch.setattr(sys, 'argv', argv)
    with pytest.raises(UnsafeCheckpointError, match='LegacyConfig'):
        load_tool('train').main()
    monkeypatch.setattr(sys, 'argv', argv + ['--allow-pickle'])
    load_tool('train').main()
    assert osp.isfile(tmp_path / 'work' / 'iter_2.pth')


def test_config_key_turns_the_opt_in_on(legacy, toy, tmp_path):
    config, _ = toy
    with open(config, 'a') as f:
        f.write('mmpeft_allow_pickle = True\n')
    load_config(config, 'none', None, None)
    assert pickle_allowed()
    assert CheckpointLoader.load_checkpoint(legacy)['meta']['config']


@pytest.mark.parametrize('tool', [
    'train', 'test', 'merge_adapters', 'convert_mona_official',
    'convert_timm_vit'
])
def test_tools_take_allow_pickle(tool, monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', [f'{tool}.py', '--help'])
    with pytest.raises(SystemExit):
        load_tool(tool).main()
    help_text = capsys.readouterr().out
    assert '--allow-pickle' in help_text and '--allow-nonfinite' in help_text


# ---------------------------------- our own checkpoints need no opt-in
def allowed_names():
    """The global names safe_types() lets a pickle use."""
    return {t[1] if isinstance(t, tuple) else
            f'{t.__module__}.{t.__qualname__}' for t in safe_types()}


def test_training_checkpoints_load_weights_only_and_resume(toy):
    """What mmengine saves (message hub HistoryBuffers, numpy scalars) is
    covered by the allow-list, nothing more is needed, and a resume runs."""
    config, work_dir = toy
    build_runner(Config.fromfile(config)).train()
    path = osp.join(work_dir, 'iter_2.pth')
    allowed = allowed_names()
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in needed
    assert needed <= allowed, needed - allowed
    with pytest.raises(pickle.UnpicklingError):  # stock torch refuses it
        torch.load(path, weights_only=True)
    checkpoint = load_file(path)
    assert checkpoint['meta']['iter'] == 2

    cfg = Config.fromfile(config)
    cfg.update(resume=True, load_from=osp.join(work_dir, 'iter_1.pth'))
    cfg.train_cfg.max_iters = 3
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter == 3


class GetattrOf:
    """Pickles as ``getattr(owner, name)``, like HistoryBuffer's methods."""

    def __init__(self, owner, name):
        self.owner, self.name = owner, name

    def __reduce__(self):
        return (getattr, (self.owner, self.name))


def test_allow_list_admits_no_code_or_objects(tmp_path):
    """Numeric numpy only: object arrays (which would hold arbitrary
    objects) stay out, and the name ``builtins.getattr`` reaches only
    HistoryBuffer's statistics methods."""
    names = allowed_names()
    assert not any(n.startswith(('os', 'posix', 'subprocess', 'runpy'))
                   for n in names)
    assert [n for n in names if n.startswith('builtins')] == \
        ['builtins.getattr']
    assert getattr not in safe_types()
    assert type(np.dtype(object)) not in safe_types()

    def load(obj):
        torch.save(obj, tmp_path / 'crafted.pth')
        return load_file(str(tmp_path / 'crafted.pth'))

    for obj in (np.array([None, 1], dtype=object), np.array(['text']),
                GetattrOf(np.ndarray, 'tofile'),
                GetattrOf(HistoryBuffer, '__init__'),
                GetattrOf(HistoryBuffer, 'register_statistics')):
        with pytest.raises(UnsafeCheckpointError):
            load(obj)
    assert load(GetattrOf(HistoryBuffer, 'mean')) is HistoryBuffer.mean


# ------------------------------------ opt-ins never travel in written files
def test_opt_ins_of_one_run_are_in_no_file_it_writes(demo_data, tmp_path,
                                                     marker, monkeypatch):
    """``--cfg-options mmpeft_allow_pickle=True`` (and the other opt-ins)
    hold for that training only: not in the work dir's config copy, not in
    ``iter_1_deploy.py``, not in the checkpoint's config text. A later
    ``tools/test.py`` of the deploy config refuses a stranger's pickle."""
    work_dir = tmp_path / 'work'
    config = str(tmp_path / 'tiny.py')
    repadapter_seg_cfg(demo_data, str(work_dir), max_iters=1).dump(config)
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setattr(sys, 'argv', ['train.py', config, '--cfg-options',
                                      *[f'{k}=True' for k in OPT_IN_KEYS]])
    load_tool('train').main()
    assert pickle_allowed()  # it was given to that run
    written = glob.glob(f'{work_dir}/**/*.py', recursive=True)
    assert {str(work_dir / 'tiny.py'), str(work_dir / 'iter_1_deploy.py')} \
        <= set(written)
    for path in written:
        assert 'mmpeft_allow' not in open(path).read(), path
    assert 'mmpeft_allow' not in load_file(
        str(work_dir / 'iter_1.pth'))['meta']['cfg']
    # Other entry points: a runner config holding one still writes none.
    cfg = Config.fromfile(config)
    cfg.mmpeft_allow_pickle = True
    merged = deploy_model(build_from_config(cfg))
    written = deploy_config(cfg, merged, 'x.pth').pretty_text
    assert 'mmpeft_allow' not in written

    for key in OPT_IN_KEYS:
        set_opt_in(key, False)
    evil = write_malicious(str(tmp_path / 'stranger.pth'), marker)
    proc = run_tool([sys.executable, 'tools/test.py',
                     str(work_dir / 'iter_1_deploy.py'), evil])
    assert 'posix.system' in assert_error_shown(proc, 'UnsafeCheckpointError')


# ----------------------------- crafted message-hub and numpy state refused
def _crafted():
    plain = (3, '<', None, None, None, -1, -1, 0)
    return {
        'statistic_redefined': (with_message_hub(history_buffer(
            statistics_methods=dict(mean=GetattrOf(HistoryBuffer, 'max')))),
            "statistic 'mean' mapped to 'max'"),
        'history_not_numbers': (with_message_hub(history_buffer(
            _log_history='1,3')), '_log_history of type str'),
        'histories_of_other_lengths': (with_message_hub(history_buffer(
            _count_history=np.array([1]))), 'of different lengths'),
        'object_array': (dict(meta=dict(note=numpy_array(
            (2, ), 'O8', [1, 2], dtype_state=None))), "numpy dtype 'O8'"),
        'float_array_with_object_flags': (dict(meta=dict(note=numpy_array(
            (2, ), 'f8', bytes(16), dtype_state=plain[:7] + (63, )))),
            "not a plain number's"),
        'array_of_2_40_elements': (dict(meta=dict(note=numpy_array(
            (2**40, ), 'f8', bytes(16)))),
            'declares 8796093022208 bytes but holds 16'),
        'ndarray_constructor_of_2_40': (dict(meta=dict(note=Reduce(
            np.ndarray, ((2**40, ), 'f8')))), 'numpy.ndarray called with'),
    }


@pytest.mark.parametrize('case', list(_crafted()))
def test_crafted_state_is_refused_and_changes_nothing(case, tmp_path):
    """Files the allow-list admits by name, with state mmengine never
    writes: refused, naming it, and no class is changed (HistoryBuffer's
    statistics table is class-level); no array is built from them (an
    object array, 8 TiB, flags numpy would free as pointers)."""
    content, reason = _crafted()[case]
    path = str(tmp_path / 'crafted.pth')
    torch.save(content, path)
    table = dict(HistoryBuffer._statistics_methods)
    try:
        with pytest.raises(UnsafeCheckpointError) as error:
            load_file(path)
        assert HistoryBuffer([1., 3.], [1, 1]).statistics('mean') == 2
        assert HistoryBuffer._statistics_methods == table
    finally:
        HistoryBuffer._statistics_methods.clear()
        HistoryBuffer._statistics_methods.update(table)
    message = str(error.value)
    assert repr(path) in message and reason in message
    assert 'crafted or corrupt' in message


def test_crafted_message_hub_stops_a_resume_before_training(toy, tmp_path):
    """Resumed through the Runner: refused at the load, before any
    iteration (it used to load, then crash the run when logging)."""
    config, work_dir = toy
    path = str(tmp_path / 'iter_1.pth')
    torch.save(with_message_hub(history_buffer(_log_history='1,3')), path)
    cfg = Config.fromfile(config)
    cfg.update(resume=True, load_from=path)
    with pytest.raises(UnsafeCheckpointError, match='_log_history'):
        build_runner(cfg).train()
    assert not glob.glob(osp.join(work_dir, '*.pth'))

