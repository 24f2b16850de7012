"""mmpretrain imports where torchvision does not (mmpeft/compat.py), and a
torchvision that imports is never touched. Each case runs ``import mmpeft``
and mmpretrain in a fresh interpreter: torchvision missing (blocked, as on
these CPU machines), broken (a package that fails at import as a wheel for
another torch does), and working (a fake package with the names mmpretrain
uses)."""
import json
import os
import subprocess
import sys

from helpers import REPO_ROOT
from test_partial_envs import run_blocked

PROBE = r'''
import json
import sys

import torch

import mmpeft  # noqa: F401
import mmpretrain.models  # noqa: F401  imports torchvision at import time
from mmpretrain.datasets.transforms import processing
from mmpretrain.models.utils import box_utils

out = dict(
    torchvision_modules=sorted(
        m for m in sys.modules if m.split('.')[0] == 'torchvision'),
    functional_file=getattr(processing.F, '__file__', None),
    stand_in=getattr(box_utils.boxes, 'mmpeft_stand_in', None),
    host=mmpeft.models.AdapterPretrainViT.__module__)
try:
    out['call'] = str(box_utils.box_iou(torch.zeros(1, 4), torch.zeros(1, 4)))
except Exception as e:
    out['call'] = f'{type(e).__name__}: {e}'
try:
    import torchvision  # what any other code gets afterwards
    out['import'] = torchvision.__file__
except Exception as e:
    out['import'] = type(e).__name__
print('RESULT ' + json.dumps(out))
'''

FAKE = {  # a working torchvision with the names mmpretrain 1.2.0 uses
    '__init__.py': 'from . import ops, transforms\n',
    'transforms/__init__.py':
    'from . import functional, transforms\n'
    'from .transforms import InterpolationMode, RandomResizedCrop\n',
    'transforms/transforms.py':
    'import enum\n'
    'class InterpolationMode(enum.Enum):\n'
    "    NEAREST = 'nearest'\n    BILINEAR = 'bilinear'\n"
    "    BICUBIC = 'bicubic'\n    BOX = 'box'\n    HAMMING = 'hamming'\n"
    "    LANCZOS = 'lanczos'\n"
    'class RandomResizedCrop:\n'
    '    def __init__(self, *args, **kwargs):\n        pass\n',
    'transforms/functional.py':
    "def resized_crop(*args, **kwargs):\n    return 'fake'\n",
    'ops/__init__.py': 'from . import boxes\n',
    'ops/boxes.py': "def box_iou(a, b):\n    return 'fake box_iou'\n",
}


def probe(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split('RESULT ', 1)[1])


def run_with(site, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(
                   [str(site), REPO_ROOT, os.environ.get('PYTHONPATH', '')]))
    return subprocess.run([sys.executable, '-c', PROBE], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True,
                          timeout=600)


def write_package(root, files):
    for name, text in files.items():
        path = root / 'torchvision' / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def assert_bridged(out, reason):
    """mmpretrain imported through stand-ins that were removed again: a call
    names the problem and the fix, later imports see the real failure."""
    assert out['host'] == 'mmpeft.models.pretrain_vit'  # not a placeholder
    assert out['torchvision_modules'] == []
    assert out['stand_in'] is not None and reason in out['stand_in']
    assert out['call'].startswith('TorchvisionUnavailableError: '
                                  'torchvision.ops.boxes.box_iou is '
                                  'unavailable'), out['call']
    assert reason in out['call'] and 'Install the torchvision' in out['call']


def test_torchvision_missing(tmp_path):
    out = probe(run_blocked(('torchvision', ), tmp_path=tmp_path,
                            script=PROBE))
    assert_bridged(out, 'ModuleNotFoundError')
    assert out['import'] == 'ModuleNotFoundError'


def test_torchvision_broken(tmp_path):
    write_package(tmp_path, {'__init__.py': (
        "raise RuntimeError('operator torchvision::nms does not exist')\n")})
    out = probe(run_with(tmp_path, tmp_path))
    assert_bridged(out, 'RuntimeError: operator torchvision::nms does not '
                   'exist')
    assert out['import'] == 'RuntimeError'


def test_a_working_torchvision_is_left_untouched(tmp_path):
    write_package(tmp_path, FAKE)
    out = probe(run_with(tmp_path, tmp_path))
    assert out['stand_in'] is None
    assert out['functional_file'] == str(
        tmp_path / 'torchvision' / 'transforms' / 'functional.py')
    assert out['call'] == 'fake box_iou'
    assert out['import'] == str(tmp_path / 'torchvision' / '__init__.py')
    assert 'torchvision.ops.boxes' in out['torchvision_modules']
