"""First-run checks of tools/train.py and tools/test.py (mmpeft/engine/preflight.py):
missing data, missing checkpoints, both; the printed demo command points every
dataset of the run at data/demo, where it then finds everything."""
import argparse
import importlib.util
import os
import os.path as osp
import shlex
import subprocess
import sys

import pytest
from mmengine.config import Config, DictAction

from helpers import REPO_ROOT
from mmpeft.engine.preflight import preflight, report

SWIN_URL = ('https://github.com/SwinTransformer/storage/releases/download/'
            'v1.0.0/swin_base_patch4_window7_224_22k.pth')
HAS_MMROTATE = importlib.util.find_spec('mmrotate') is not None
# config -> (a path the message lists as missing, its dataset's download URL)
CONFIGS = {
    'configs/mona/maskrcnn_swinb_coco.py':
    ('data/coco/', 'http://images.cocodataset.org/'),
    'configs/mona/fasterrcnn_swinb_voc.py':
    ('data/VOCdevkit/', 'http://host.robots.ox.ac.uk/pascal/VOC/'),
    'configs/repadapter/upernet_vitb_ade20k.py':
    ('data/ade/ADEChallengeData2016',
     'http://data.csail.mit.edu/places/ADEchallenge/'),
    'configs/mimi/orientedrcnn_swinb_dota.py':
    ('data/split_ss_dota/', 'https://captain-whu.github.io/DOTA/'),
}


@pytest.fixture
def workspace(tmp_path, monkeypatch, demo_data):
    """An empty working directory whose data/demo is the generated data."""
    monkeypatch.chdir(tmp_path)
    os.makedirs('data')
    os.symlink(demo_data, 'data/demo')
    return tmp_path


def load(config):
    return Config.fromfile(osp.join(REPO_ROOT, config))


def demo_cfg_options(message):
    """The ``--cfg-options`` of the message's demo command, parsed as the
    tools parse them."""
    command = next(line for line in message.splitlines()
                   if line.strip().startswith('python tools/')
                   and '--cfg-options' in line)
    tokens = shlex.split(command)
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    start = tokens.index('--cfg-options')
    return parser.parse_args(tokens[start:]).cfg_options


def skip_without_mmrotate(config):
    if 'dota' in config and not HAS_MMROTATE:
        pytest.skip('mmrotate not installed: DOTA configs need it')


@pytest.mark.parametrize('config', list(CONFIGS))
def test_missing_data_and_checkpoint(config, workspace):
    skip_without_mmrotate(config)
    missing_root, url = CONFIGS[config]
    cfg = load(config)
    message = report(cfg, config, 'train')
    assert message is not None
    assert f'{missing_root}  (train_dataloader.dataset' in message
    assert 'expected layout: data/' in message and url in message
    # the pretrained backbone, with its release URL
    assert 'Missing checkpoint: checkpoints/' in message
    assert 'model.backbone.init_cfg.checkpoint' in message
    assert ('wget' in message) and ('releases/download' in message)
    assert 'python tools/make_demo_data.py --out data/demo' in message

    # The demo command's options make every input of the run exist.
    options = demo_cfg_options(message)
    assert options['model.backbone.init_cfg'] is None
    cfg.merge_from_dict(options)
    assert report(cfg, config, 'train') is None


def test_missing_data_only_lists_the_data(workspace):
    config = 'configs/mona/maskrcnn_swinb_coco.py'
    cfg = load(config)
    os.makedirs('checkpoints')
    open('checkpoints/swin_base_patch4_window7_224_22k.pth', 'wb').close()
    message = report(cfg, config, 'train')
    assert 'Missing checkpoint' not in message
    assert message.splitlines()[1] == 'Missing dataset files (COCO 2017):'
    assert 'data/coco/  (train_dataloader.dataset.data_root)' in message
    options = demo_cfg_options(message)
    assert options == {
        'train_dataloader.dataset.data_root': 'data/demo/coco/',
        'val_dataloader.dataset.data_root': 'data/demo/coco/',
        'val_evaluator.ann_file':
        'data/demo/coco/annotations/instances_val2017.json',
    }


def test_missing_checkpoint_only(workspace):
    """Data in place (the demo data under the config's own data_root), the
    Swin-B release missing: its path, download command and the option that
    skips it."""
    config = 'configs/mona/maskrcnn_swinb_coco.py'
    os.symlink(osp.join('demo', 'coco'), 'data/coco')
    cfg = load(config)
    message = report(cfg, config, 'train')
    assert message.splitlines()[1:3] == [
        'Missing checkpoint: checkpoints/swin_base_patch4_window7_224_22k.pth'
        '  (model.backbone.init_cfg.checkpoint)',
        f'  download: mkdir -p checkpoints && wget -P checkpoints {SWIN_URL}'
    ]
    assert 'Missing dataset' not in message
    assert demo_cfg_options(message) == {'model.backbone.init_cfg': None}


def test_load_from_and_test_checkpoint(workspace):
    config = 'configs/mona/fasterrcnn_swinb_voc.py'
    cfg = load(config)
    cfg.merge_from_dict(demo_cfg_options(report(cfg, config, 'train')))
    cfg.load_from = 'work_dirs/old/iter_100.pth'
    message = report(cfg, config, 'train')
    assert 'Missing checkpoint: work_dirs/old/iter_100.pth  (load_from)' \
        in message
    assert demo_cfg_options(message)['load_from'] is None

    # tools/test.py: its checkpoint argument becomes load_from; Pretrained
    # init_cfgs are not loaded when testing, so not checked. The demo needs
    # a checkpoint trained on it: no demo command.
    cfg = load(config)
    cfg.load_from = 'missing.pth'
    message = report(cfg, config, 'test')
    assert 'missing.pth  (the checkpoint argument)' in message
    assert 'test_dataloader.dataset.data_root' in message
    assert 'swin_base' not in message
    assert '--cfg-options' not in message


def test_wrapped_datasets_are_checked_inside(workspace):
    """VOC trains on RepeatDataset(ConcatDataset([07, 12])): a missing
    VOC2012 is found inside the wrappers, with its config key."""
    config = 'configs/mona/fasterrcnn_swinb_voc.py'
    os.makedirs('data/VOCdevkit/VOC2007')
    cfg = load(config)
    message = report(cfg, config, 'train')
    key = 'train_dataloader.dataset.dataset.datasets.1'
    assert f'data/VOCdevkit/VOC2012/ImageSets/Main/trainval.txt  ({key}' \
        f'.ann_file)' in message
    assert f'data/VOCdevkit/VOC2012/  ({key}.data_prefix.sub_data_root)' \
        in message
    assert f'{key.replace(".1", ".0")}.data_prefix.sub_data_root' not in \
        message  # VOC2007/ exists


def test_train_tool_exits_before_building(workspace):
    config = osp.join(REPO_ROOT, 'configs/mona/maskrcnn_swinb_coco.py')
    proc = subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'tools/train.py'), config],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS='1'))
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert 'Missing dataset files (COCO 2017):' in proc.stderr
    assert 'Missing checkpoint: checkpoints/swin_base' in proc.stderr
    assert not osp.exists('work_dirs')  # the runner was never built


def test_preflight_sets_dota_nproc_from_the_loader(workspace):
    config = 'configs/mona/orientedrcnn_swinb_dota.py'
    skip_without_mmrotate(config)
    cfg = load(config)
    cfg.merge_from_dict(demo_cfg_options(report(cfg, config, 'train')))
    cfg.val_dataloader.num_workers = 3
    preflight(cfg, config, 'train')
    assert cfg.val_evaluator.nproc == 3

    cfg = load(config)
    open('trained.pth', 'wb').close()
    cfg.load_from = 'trained.pth'
    cfg.merge_from_dict(demo_cfg_options(report(cfg, config, 'test')))
    cfg.test_dataloader.num_workers = 0
    preflight(cfg, config, 'test')
    assert cfg.test_evaluator.nproc == 1


@pytest.mark.skipif(not HAS_MMROTATE, reason='mmrotate not installed')
@pytest.mark.parametrize('nproc, expected', [(None, None), (1, 1), (3, 3)])
def test_dota_metric_pool_follows_nproc(nproc, expected, monkeypatch):
    """mmpeft's DOTAMetric ``nproc`` reaches mmrotate's process pool
    (``None``: mmrotate's 4, capped at the CPU count)."""
    import numpy as np
    from mmrotate.evaluation.functional import mean_ap
    from mmengine.registry import DefaultScope
    from mmrotate.registry import METRICS

    sizes = []

    class InlinePool:
        def __init__(self, size):
            sizes.append(size)

        def starmap(self, fn, args):
            return [fn(*a) for a in args]

        def close(self):
            pass

    class Context:
        Pool = InlinePool

    monkeypatch.setattr(mean_ap, 'get_context', lambda method: Context)
    cfg = dict(type='DOTAMetric', metric='mAP')
    if nproc is not None:
        cfg['nproc'] = nproc
    # In mmrotate's scope, whatever scope an earlier test left as default.
    with DefaultScope.overwrite_default_scope('mmrotate'):
        metric = METRICS.build(cfg)
    metric.dataset_meta = dict(classes=('plane', ))
    box = np.array([[10., 10., 6., 4., 0.]], np.float32)
    gt = dict(bboxes=box, labels=np.array([0]),
              bboxes_ignore=np.zeros((0, 5), np.float32),
              labels_ignore=np.zeros(0, np.int64))
    pred = dict(img_id='p0', bboxes=box, scores=np.array([0.9], np.float32),
                labels=np.array([0]), pred_bbox_scores=[
                    np.array([[10., 10., 6., 4., 0., 0.9]], np.float32)])
    result = metric.compute_metrics([(gt, pred)])
    assert result['mAP'] == pytest.approx(1.0)
    assert sizes == [expected or min(4, os.cpu_count())]
