"""tools/train.py and tools/test.py, run as a user runs them, on one config
per task type (shrunk by helpers.tiny_runner_cfg), report the stock metrics."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from helpers import REPO_ROOT, tiny_runner_cfg

TASKS = {
    'detection': ('configs/demo/mona_fasterrcnn_voc.py', ['pascal_voc/mAP']),
    'instance_segmentation':
    ('configs/demo/mona_maskrcnn_coco.py', ['coco/bbox_mAP', 'coco/segm_mAP']),
    'semantic_segmentation': ('configs/demo/mona_upernet_ade20k.py', ['mIoU']),
    'oriented_detection':
    ('configs/demo/mona_orientedrcnn_dota.py', ['dota/mAP']),
}


def run_tool(*args):
    # One intra-op thread: the tiny models run faster so on 2 cores.
    result = subprocess.run([sys.executable, *args],
                            cwd=REPO_ROOT,
                            env=dict(os.environ, OMP_NUM_THREADS='1'),
                            capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize('tool', ['train.py', 'test.py', 'make_demo_data.py'])
def test_help(tool):
    assert 'usage:' in run_tool(osp.join('tools', tool), '--help')


@pytest.mark.slow
@pytest.mark.parametrize('task', TASKS)
def test_train_then_test(task, demo_data, tmp_path):
    config, metric_keys = TASKS[task]
    cfg = tiny_runner_cfg(
        osp.join(REPO_ROOT, config), demo_data, tmp_path, max_iters=2)
    cfg_file = str(tmp_path / 'tiny.py')
    cfg.dump(cfg_file)

    log = run_tool('tools/train.py', cfg_file, '--work-dir', str(tmp_path))
    assert 'Saving checkpoint at 2 iterations' in log
    ckpt = str(tmp_path / 'iter_2.pth')
    assert osp.isfile(ckpt)

    out = run_tool('tools/test.py', cfg_file, ckpt, '--work-dir',
                   str(tmp_path))
    metrics = json.loads(out.strip().splitlines()[-1])
    for key in metric_keys:
        assert 0 <= metrics[key] <= 100
