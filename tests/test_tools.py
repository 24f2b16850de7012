"""tools/train.py and tools/test.py, run as a user runs them, on one config
per task type (shrunk by helpers.tiny_runner_cfg), report the stock metrics."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

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


@pytest.mark.slow
def test_demo_two_steps(demo_data, tmp_path):
    """`make demo` in small: the stock Swin detector trains on the COCO
    set, Mona fine-tunes on its frozen backbone on the VOC set, and
    tools/test.py evaluates the merged deploy checkpoint and the
    adapter-only checkpoint on the step-1 model."""
    base = str(tmp_path / 'step1' / 'iter_2.pth')
    stem = str(tmp_path / 'step2' / 'iter_2')
    step2_file = str(tmp_path / 'step2.py')
    for step, config in (('step1', 'swin_fasterrcnn_coco.py'),
                         ('step2', 'mona_fasterrcnn_voc.py')):
        cfg = tiny_runner_cfg(osp.join(REPO_ROOT, 'configs/demo', config),
                              demo_data, tmp_path / step, max_iters=2)
        if step == 'step2':  # tiny_runner_cfg drops Pretrained init_cfgs
            cfg.model.backbone.init_cfg = dict(type='Pretrained',
                                               checkpoint=base)
        cfg_file = str(tmp_path / f'{step}.py')
        cfg.dump(cfg_file)
        run_tool('tools/train.py', cfg_file, '--work-dir',
                 str(tmp_path / step))

    pretrained = torch.load(base, weights_only=False)['state_dict']
    tuned = torch.load(stem + '.pth', weights_only=False)['state_dict']
    backbone = [k for k in pretrained if k.startswith('backbone.')]
    assert backbone and all(torch.equal(tuned[k], pretrained[k])
                            for k in backbone)  # loaded, then frozen
    assert any('adapter' in k for k in set(tuned) - set(pretrained))

    for args in ((stem + '_deploy.py', stem + '_deploy.pth'),
                 (step2_file, base, '--adapter', stem + '_adapters.pth')):
        out = run_tool('tools/test.py', *args, '--work-dir', str(tmp_path))
        metrics = json.loads(out.strip().splitlines()[-1])
        assert 0 <= metrics['pascal_voc/mAP'] <= 1
