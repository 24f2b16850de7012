"""``import mmpeft`` in an environment with only some of mmdet / mmseg /
mmrotate, simulated in a subprocess whose sitecustomize blocks the others
(``import mmseg`` raises ModuleNotFoundError, as when it is not installed).

Each environment: what registers, what a config naming a backbone whose host
is missing gets (one line with the pip command, from the registry build that
a ``custom_imports`` user runs and from the tools' first-run check), and that
the hooks and the export code work without the blocked packages."""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from helpers import REPO_ROOT

BLOCKER = '''
import os
import sys


class BlockHosts:
    """Meta-path finder: the listed top-level packages are "not installed"."""

    def __init__(self, names):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in self.names:
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
        return None


_blocked = {n for n in os.environ.get('MMPEFT_TEST_BLOCK', '').split(',') if n}
if _blocked:
    sys.meta_path.insert(0, BlockHosts(_blocked))
'''

PROBE = r'''
import json
import sys

import mmpeft
from mmengine.config import Config
from mmengine.registry import HOOKS, MODELS, DefaultScope

from mmpeft.engine import PEFTFreezeHook, write_deploy  # export loads
from mmpeft.engine.preflight import missing_hosts
from mmpeft.env import MissingHostError, report

out = dict(version=mmpeft.__version__,
           loaded=sorted(m for m in ('mmdet', 'mmseg', 'mmrotate',
                                     'mmpretrain', 'mmpeft.benchmark')
                         if m in sys.modules))
tiny = dict(
    MonaSwinTransformer=dict(
        type='MonaSwinTransformer', embed_dims=16, depths=[1, 1],
        num_heads=[1, 2], strides=(4, 2), out_indices=(0, 1),
        adapter_cfg=dict(type='Mona', inner_dim=8)),
    MiMiSwin=dict(
        type='MiMiSwin', embed_dims=16, depths=[1, 1], num_heads=[1, 2],
        strides=(4, 2), out_indices=(0, 1)),
    RepAdapterViT=dict(
        type='RepAdapterViT', img_size=(32, 32), patch_size=16, embed_dims=32,
        num_layers=1, num_heads=2, mlp_ratio=2),
    SimpleFeaturePyramid=dict(type='SimpleFeaturePyramid', in_channels=8),
    AdapterPretrainViT=dict(
        type='AdapterPretrainViT', img_size=28, patch_size=14,
        arch=dict(embed_dims=32, num_layers=1, num_heads=2,
                  feedforward_channels=64), layer_scale_init_value=1e-5,
        adapters=dict(attn=dict(qkv=dict(type='LoRA', r=2)))),
)
built = {}
for name, cfg in tiny.items():
    try:
        built[name] = type(MODELS.build(cfg)).__name__
    except MissingHostError as e:
        built[name] = 'missing: ' + str(e)
out['built'] = built
# The export path (deploy + adapter-only checkpoints) with what is present.
import os, tempfile, torch
from mmpeft.engine import adapter_checkpoint
peft = [n for n in ('MonaSwinTransformer', 'RepAdapterViT') if built[n] == n]
exported = {}
for name in peft:
    wrapper = torch.nn.Module()
    wrapper.backbone = MODELS.build(tiny[name])
    path = os.path.join(tempfile.mkdtemp(), 'deploy.pth')
    merged = write_deploy(wrapper, None, path, None)
    exported[name] = [os.path.isfile(path),
                      len(adapter_checkpoint(wrapper)['state_dict']) > 0]
out['exported'] = exported
out['hook'] = type(HOOKS.build(dict(type='PEFTFreezeHook'))).__name__

# What a user of the codebase's own tools sees: the config's model built
# through its scope's registry (custom_imports = mmpeft).
cfg = Config.fromfile(sys.argv[1])
out['preflight'] = missing_hosts(cfg)
scope = cfg.default_scope
try:
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        registry.build(cfg.model)
    out['config_build'] = 'built'
except Exception as e:
    out['config_build'] = f'{type(e).__name__}: {e}'
out['report'] = report()
print('RESULT ' + json.dumps(out))
'''

PIP = {
    'mmdet': 'pip install "mmdet>=',
    'mmseg': 'pip install "mmsegmentation>=',
    'mmpretrain': 'pip install "mmpretrain>=',
}
HOST_PACKAGES = ('mmdet', 'mmseg', 'mmrotate', 'mmpretrain')
INSTALLED = {m: importlib.util.find_spec(m) is not None for m in HOST_PACKAGES}
# name -> (blocked packages, a config whose backbone needs a blocked host
# where one is blocked)
ENVS = {
    'mmdet_only': (('mmseg', 'mmrotate'),
                   'configs/repadapter/maskrcnn_vitb_coco.py'),
    'mmseg_only': (('mmdet', 'mmrotate'),
                   'configs/mona/upernet_swinb_ade20k.py'),
    'mmdet_mmseg': (('mmrotate', ), 'configs/mona/maskrcnn_swinb_coco.py'),
    'full': ((), 'configs/repadapter/upernet_vitb_ade20k.py'),
    'no_mmpretrain': (('mmpretrain', 'mmrotate'),
                      'configs/lora/maskrcnn_dinov2b_coco.py'),
}
NEEDS = {'MonaSwinTransformer': 'mmdet', 'MiMiSwin': 'mmdet',
         'RepAdapterViT': 'mmseg', 'SimpleFeaturePyramid': None,
         'AdapterPretrainViT': 'mmpretrain'}


def run_blocked(blocked, *args, tmp_path, script=None):
    """Run python (``-c script`` or ``args``) with ``blocked`` packages
    not importable; returns the finished process."""
    site = tmp_path / 'site'
    site.mkdir(exist_ok=True)
    (site / 'sitecustomize.py').write_text(BLOCKER)
    env = dict(os.environ,
               MMPEFT_TEST_BLOCK=','.join(blocked),
               OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(
                   [str(site), REPO_ROOT,
                    os.environ.get('PYTHONPATH', '')]))
    command = [sys.executable, *(['-c', script] if script else []), *args]
    return subprocess.run(command, cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize('env_name', [
    'mmdet_only', 'mmseg_only', 'mmdet_mmseg', 'no_mmpretrain',
    pytest.param('full', marks=pytest.mark.slow)  # what every other test runs
])
def test_import_and_registration(env_name, tmp_path):
    blocked, config = ENVS[env_name]
    absent = [m for m in HOST_PACKAGES
              if not INSTALLED[m] and m not in blocked]
    if absent:
        pytest.skip(f'{", ".join(absent)} not installed in this stack '
                    '(e.g. the latest stack has no mmrotate)')
    proc = run_blocked(blocked, config, tmp_path=tmp_path, script=PROBE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split('RESULT ', 1)[1])
    present = {m for m in HOST_PACKAGES
               if m not in blocked and INSTALLED[m]}

    import mmpeft
    assert out['version'] == mmpeft.__version__
    # Only present hosts load; the benchmark is for tools/benchmark.py only.
    assert set(out['loaded']) <= present
    assert 'mmpeft.benchmark' not in out['loaded']
    assert out['hook'] == 'PEFTFreezeHook'
    assert out['exported'] == {
        n: [True, True] for n in ('MonaSwinTransformer', 'RepAdapterViT')
        if NEEDS[n] in present}
    for name, host in NEEDS.items():
        result = out['built'][name]
        if host is None or host in present:
            assert result == name, result
        else:
            assert result.startswith('missing: '), result
            assert '\n' not in result and PIP[host] in result, result
            assert f'{name}:' in out['report'] and PIP[host] in out['report']

    # The config's own model through its scope's registry.
    needs = {'mmdet_only': 'mmseg', 'mmseg_only': 'mmdet',
             'no_mmpretrain': 'mmpretrain'}.get(env_name)
    if needs is None:
        assert out['config_build'] == 'built', out['config_build']
        assert out['preflight'] == []
    else:
        last = out['config_build']
        assert '\n' not in last and PIP[needs] in last, last
        assert len(out['preflight']) == 1 and PIP[needs] in out['preflight'][0]


def test_train_tool_names_the_missing_host_in_one_line(tmp_path):
    """tools/train.py, mmseg not installed, a RepAdapterViT (mmseg's ViT)
    detection config: one line on stderr, exit 1, nothing built."""
    proc = run_blocked(('mmseg', 'mmrotate'), 'tools/train.py',
                       'configs/repadapter/maskrcnn_vitb_coco.py',
                       '--work-dir', str(tmp_path / 'work'), tmp_path=tmp_path)
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]  # after any import warnings
    assert last.startswith('RepAdapterViT needs mmsegmentation'), last
    assert PIP['mmseg'] in last
    assert not osp.exists(tmp_path / 'work')


def test_rotated_config_without_mmrotate(tmp_path):
    """A DOTA (mmrotate-scope) config without mmrotate: the scope's package
    and its pip command, before anything is built."""
    proc = run_blocked(('mmrotate', ), 'tools/train.py',
                       'configs/mona/orientedrcnn_swinb_dota.py',
                       '--work-dir', str(tmp_path / 'work'), tmp_path=tmp_path)
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("default_scope='mmrotate' needs mmrotate"), last
    assert 'pip install "mmrotate==1.0.0rc1"' in last


def test_env_info_tool_prints_the_stack():
    proc = subprocess.run([sys.executable, 'tools/env_info.py'],
                          cwd=REPO_ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO_ROOT),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import mmcv
    import mmengine
    import torch
    printed = proc.stdout
    assert f'torch: {torch.__version__}' in printed
    assert f'mmengine: {mmengine.__version__}' in printed
    assert f'mmcv: {mmcv.__version__}; ops: built' in printed
    assert '\ntorchvision: ' in printed  # a version, or why mmpretrain bridges it
    for package, dist in (('mmdet', 'mmdet'), ('mmseg', 'mmsegmentation')):
        if INSTALLED[package]:
            version = __import__(package).__version__
            assert f'{dist}: {version}' in printed
    assert 'MODELS.MonaSwinTransformer: available' in printed
    assert 'HOOKS.PEFTFreezeHook' in printed


@pytest.mark.slow
def test_pip_install_declares_nothing_that_replaces_the_stack():
    """``pip install -e .[mmdet,mmseg]`` into this (complete) environment
    would install mmpeft alone: every declared requirement, torch and mmcv
    included, is already satisfied (dry run, no index: nothing is changed)."""
    extras = ','.join(m for m in HOST_PACKAGES if INSTALLED[m])
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-index',
         '--no-build-isolation', '--quiet', '--report', '-',
         f'{REPO_ROOT}[{extras}]'],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    installs = json.loads(proc.stdout)['install']
    assert [i['metadata']['name'] for i in installs] == ['mmpeft']
