"""Shrink any mmpeft config to a seconds-long run on the generated data.

Tests of full-size configs (Swin-B / ViT-B on COCO, ADE20K, VOC, DOTA) call
:func:`tiny_runner_cfg`; it keeps the model architecture and every custom
hook or runner, and replaces what needs real data, real time or a download::

    from helpers import tiny_runner_cfg
    from mmengine.runner import Runner

    cfg = tiny_runner_cfg('configs/mona/maskrcnn_swinb_coco.py',
                          demo_data, tmp_path)   # `demo_data`: conftest.py
    runner = Runner.from_cfg(cfg)
    runner.train()            # max_iters iterations, then validation
    metrics = runner.test()   # e.g. metrics['coco/bbox_mAP']

``import mmpeft`` first when the config names mmpeft classes (tests/
conftest.py does it for every test).
"""
import copy
import importlib.util
import os
import os.path as osp

import cv2
import torch
from mmengine.config import Config, ConfigDict

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_tool(name):
    """Import tools/<name>.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        name, osp.join(REPO_ROOT, 'tools', name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Per dataset type: (sub-directory under the generated root, train split,
# validation split), each split as the dataset arguments that select it.
# The layouts are those written by tools/make_demo_data.py.
_DATA = {
    'CocoDataset': ('coco',
                    dict(
                        ann_file='annotations/instances_train2017.json',
                        data_prefix=dict(img='train2017/')),
                    dict(
                        ann_file='annotations/instances_val2017.json',
                        data_prefix=dict(img='val2017/'))),
    'ADE20KDataset': ('ade/ADEChallengeData2016',
                      dict(
                          data_prefix=dict(
                              img_path='images/training',
                              seg_map_path='annotations/training')),
                      dict(
                          data_prefix=dict(
                              img_path='images/validation',
                              seg_map_path='annotations/validation'))),
    'VOCDataset': ('VOCdevkit',
                   dict(
                       ann_file='VOC2007/ImageSets/Main/trainval.txt',
                       data_prefix=dict(sub_data_root='VOC2007/')),
                   dict(
                       ann_file='VOC2007/ImageSets/Main/test.txt',
                       data_prefix=dict(sub_data_root='VOC2007/'))),
    'DOTADataset': ('dota',
                    dict(
                        ann_file='trainval/annfiles/',
                        data_prefix=dict(img_path='trainval/images/')),
                    dict(
                        ann_file='test/annfiles/',
                        data_prefix=dict(img_path='test/images/'))),
}
# Wrappers whose `dataset` / `datasets` hold the real dataset(s).
_WRAPPERS = ('RepeatDataset', 'ConcatDataset', 'ClassBalancedDataset',
             'MultiImageMixDataset')


def _type(cfg):
    """Registry name without its scope prefix ('mmdet.Resize' -> 'Resize')."""
    return str(cfg.get('type', '')).split('.')[-1]


def _leaf_dataset(dataset):
    """The first real dataset inside (possibly nested) dataset wrappers."""
    while _type(dataset) in _WRAPPERS:
        dataset = dataset['dataset'] if 'dataset' in dataset else \
            dataset['datasets'][0]
    return dataset


def _shrink_pipeline(pipeline, img_scale):
    """Resize to img_scale (w, h); crop to (h, w) as RandomCrop expects."""
    for t in pipeline:
        kind = _type(t)
        if kind in ('Resize', 'RandomResize') and 'scale' in t:
            t['scale'] = img_scale if kind == 'Resize' or t.get(
                'ratio_range') else [img_scale, img_scale]
        elif kind == 'RandomChoiceResize':
            t['scales'] = [img_scale]
        elif kind == 'RandomCrop' and str(t.get(
                'crop_type', 'absolute')).startswith('absolute'):
            t['crop_size'] = img_scale[::-1]  # relative crops can stay
        for key in ('transforms', 'transforms_list'):  # nested transforms
            if isinstance(t.get(key), list):
                _shrink_pipeline(t[key], img_scale)


def _first_image_shape(img_dir):
    name = sorted(os.listdir(img_dir))[0]
    return cv2.imread(osp.join(img_dir, name)).shape[:2]


def _dataset(template, split, data_root, img_scale):
    """`template` pointed at `split` of the generated data, small images."""
    dataset = copy.deepcopy(template)
    kind = _type(dataset)
    if kind not in _DATA:
        raise ValueError(f'no generated data for dataset type {kind}')
    subdir, train, val = _DATA[kind]
    dataset['data_root'] = osp.join(data_root, subdir)
    dataset.update(copy.deepcopy(train if split == 'train' else val))
    if kind == 'DOTADataset':
        dataset['img_shape'] = _first_image_shape(
            osp.join(dataset['data_root'], dataset['data_prefix']['img_path']))
    _shrink_pipeline(dataset['pipeline'], img_scale)
    return dataset


def _drop_pretrained(cfg):
    """Remove every `init_cfg=dict(type='Pretrained', ...)` below cfg."""
    if isinstance(cfg, dict):
        init_cfg = cfg.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            cfg['init_cfg'] = None
        for value in cfg.values():
            _drop_pretrained(value)
    elif isinstance(cfg, list):
        for value in cfg:
            _drop_pretrained(value)


def tiny_runner_cfg(config_path,
                    data_root,
                    work_dir,
                    max_iters=1,
                    img_scale=(128, 128)):
    """Load `config_path` and scale it down to a tiny run on generated data.

    Args:
        config_path (str): any config under configs/ (mmdet, mmseg or
            mmrotate scope; COCO, ADE20K, VOC or DOTA dataset).
        data_root (str): root written by ``tools/make_demo_data.make_all``.
        work_dir (str): the runner's work_dir.
        max_iters (int): training iterations (IterBasedTrainLoop); the model
            is validated once at the end.
        img_scale (tuple): (w, h) of every Resize / RandomResize /
            RandomChoiceResize scale, RandomCrop size and mmseg's
            data_preprocessor size (the last two take (h, w): swapped).

    Returns:
        mmengine.Config: ready for ``Runner.from_cfg``. Changed: datasets
        (train on the generated train split, validate and test on the whole
        generated val split, so generate few val images; dataset wrappers
        such as VOC's RepeatDataset(ConcatDataset(07, 12)) become their first
        dataset), batch size 2 for training and 1 for testing, no dataloader
        workers, the train loop, checkpoint and logging intervals, and every
        Pretrained init_cfg is dropped (nothing to download). Kept: the model
        (architecture, num_classes, frozen parts), optimizer, param
        schedulers, custom hooks, custom runner.
    """
    cfg = Config.fromfile(config_path)
    cfg.work_dir = str(work_dir)
    cfg.load_from = None
    cfg.resume = False
    cfg.randomness = dict(seed=0)

    _drop_pretrained(cfg.model)
    if cfg.model.get('pretrained'):
        cfg.model.pretrained = None
    if 'size' in cfg.model.get('data_preprocessor', {}):  # mmseg: (h, w)
        cfg.model.data_preprocessor.size = img_scale[::-1]

    train_set = _leaf_dataset(cfg.train_dataloader.dataset)
    val_set = _leaf_dataset(cfg.val_dataloader.dataset)
    cfg.train_dataloader.dataset = _dataset(train_set, 'train', data_root,
                                            img_scale)
    cfg.val_dataloader.dataset = _dataset(val_set, 'val', data_root,
                                          img_scale)
    # Two training images per batch: the BatchNorm after UperNet's 1x1
    # pyramid pooling cannot train on a single value per channel.
    cfg.train_dataloader.batch_size = 2
    cfg.val_dataloader.batch_size = 1
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.update(num_workers=0, persistent_workers=False)
    cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)

    evaluators = cfg.val_evaluator if isinstance(cfg.val_evaluator,
                                                 list) else [cfg.val_evaluator]
    for evaluator in evaluators:
        if _type(evaluator) == 'CocoMetric':
            evaluator['ann_file'] = osp.join(
                cfg.val_dataloader.dataset.data_root,
                cfg.val_dataloader.dataset.ann_file)
    cfg.test_evaluator = copy.deepcopy(cfg.val_evaluator)

    cfg.train_cfg = ConfigDict(
        type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.update(by_epoch=False, interval=max_iters)
    cfg.log_processor = dict(by_epoch=False)
    return cfg


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor,
                          rtol: float = 1e-5, scale: float = 1e-6) -> None:
    """``actual`` and ``expected`` are the same maths by two code paths
    (mmpeft's module and a stock or official one, merged and unmerged): they
    agree to rounding, and rounding depends on the kernels the CPU picks
    (AMD and Intel differ), so never compare them bitwise. The absolute
    tolerance is ``scale`` times the largest expected value."""
    atol = scale * expected.detach().abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)
