"""The generated datasets are read by the stock dataset classes and the stock
pipelines of configs/_base_/datasets/, and mean what the generator says."""
import filecmp
import json
import os
import os.path as osp
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import DATASETS, init_default_scope

from helpers import REPO_ROOT, load_tool

gen = load_tool('make_demo_data')
BASE = osp.join(REPO_ROOT, 'configs', '_base_', 'datasets')


def build(dataset_cfg, scope, data_root):
    init_default_scope(scope)
    dataset_cfg = dataset_cfg.copy()
    dataset_cfg['data_root'] = data_root
    return DATASETS.build(dataset_cfg)


def test_deterministic(tmp_path):
    a = gen.make_all(str(tmp_path / 'a'), 2, 1, 128, seed=3)
    b = gen.make_all(str(tmp_path / 'b'), 2, 1, 128, seed=3)
    c = gen.make_coco(str(tmp_path / 'c'), 2, 1, 128, seed=4)
    for name in gen.DATASETS:
        diff = filecmp.dircmp(a[name], b[name])
        assert not (diff.diff_files or diff.left_only or diff.right_only)
    ann = 'annotations/instances_train2017.json'
    assert not filecmp.cmp(
        osp.join(a['coco'], ann), osp.join(c, ann), shallow=False)


def test_classes_are_the_first_stock_classes():
    from mmdet.datasets import CocoDataset, VOCDataset
    from mmseg.datasets import ADE20KDataset
    assert gen.COCO_CATEGORIES == CocoDataset.METAINFO['classes']
    for ours, stock in ((gen.COCO_CLASSES, CocoDataset),
                        (gen.VOC_CLASSES, VOCDataset),
                        (gen.ADE20K_CLASSES, ADE20KDataset)):
        assert stock.METAINFO['classes'][:len(ours)] == ours


def test_dota_classes_are_the_first_stock_classes():
    pytest.importorskip('mmrotate', reason='mmrotate is not installed')
    from mmrotate.datasets import DOTADataset
    assert DOTADataset.METAINFO['classes'][:len(gen.DOTA_CLASSES)] == \
        gen.DOTA_CLASSES


def test_coco(demo_data):
    cfg = Config.fromfile(osp.join(BASE, 'coco_instance.py'))
    root = osp.join(demo_data, 'coco')
    train = build(cfg.train_dataloader.dataset, 'mmdet', root)
    val = build(cfg.val_dataloader.dataset, 'mmdet', root)
    assert (len(train), len(val)) == (4, 2)

    with open(osp.join(root, 'annotations/instances_train2017.json')) as f:
        coco = json.load(f)
    assert [c['name'] for c in coco['categories']] == list(
        train.metainfo['classes'])  # all 80, in the stock order
    item = train[0]
    img_id = item['data_samples'].img_id
    anns = [a for a in coco['annotations'] if a['image_id'] == img_id]
    gt = item['data_samples'].gt_instances
    assert item['inputs'].shape[0] == 3
    # Resized to 1333x800 keeping the 4:3 aspect ratio: 800 / 192 = 4.17.
    assert tuple(item['inputs'].shape[1:]) == (800, 1067)
    assert len(gt) == len(anns) > 0
    assert sorted(gt.labels.tolist()) == sorted(
        train.cat2label[a['category_id']] for a in anns)
    # Each mask covers roughly its polygon's area (x4.17^2 after resizing).
    scale = 800 / 192
    areas = sorted(gt.masks.areas / scale**2)
    np.testing.assert_allclose(
        areas, sorted(a['area'] for a in anns), rtol=0.15)


def test_ade20k(demo_data):
    cfg = Config.fromfile(osp.join(BASE, 'ade20k.py'))
    root = osp.join(demo_data, 'ade/ADEChallengeData2016')
    train = build(cfg.train_dataloader.dataset, 'mmseg', root)
    val = build(cfg.val_dataloader.dataset, 'mmseg', root)
    assert (len(train), len(val)) == (4, 2)
    item = train[0]
    seg = item['data_samples'].gt_sem_seg.data
    # Random resize around 512 px, then a crop of at most 512x512.
    assert item['inputs'].shape[1:] == seg.shape[1:]
    assert item['inputs'].shape[0] == 3 and max(seg.shape) <= 512
    # reduce_zero_label: wall (1) -> 0, ..., tree (5) -> 4, other (0) -> 255
    assert set(seg.unique().tolist()) <= {0, 1, 2, 3, 4, 255}
    label = val[0]['data_samples'].gt_sem_seg.data  # val: original size
    assert tuple(label.shape) == (1, 256, 256)
    assert (label[0, 0] == 255).all() and (label[0, 128:130] != 255).any()
    assert 0 in label.unique().tolist()


def test_voc(demo_data):
    cfg = Config.fromfile(osp.join(BASE, 'voc0712.py'))
    root = osp.join(demo_data, 'VOCdevkit')
    init_default_scope('mmdet')
    train_cfg = cfg.train_dataloader.dataset
    for sub in train_cfg.dataset.datasets:
        sub.data_root = root
    train = DATASETS.build(train_cfg)
    val = build(cfg.val_dataloader.dataset, 'mmdet', root)
    # RepeatDataset(times=3) over VOC2007 (2) + VOC2012 (2) trainval.
    assert (len(train), len(val)) == (12, 2)
    item = val[0]
    gt = item['data_samples'].gt_instances
    assert len(gt) > 0
    assert gt.labels.max() < len(gen.VOC_CLASSES)
    # Boxes at the original scale (LoadAnnotations after Resize), in range.
    boxes = gt.bboxes.numpy()
    assert boxes.min() >= 0 and boxes[:, 2].max() <= 256
    assert boxes[:, 3].max() <= 192
    # The stock 32-px threshold ignores only the odd thin generated object.
    ignored = [
        i['ignore_flag'] for d in train.dataset.datasets
        for k in range(len(d)) for i in d.get_data_info(k)['instances']
    ]
    assert ignored.count(1) <= len(ignored) // 4


def test_dota(demo_data):
    cfg = Config.fromfile(osp.join(BASE, 'dota.py'))
    root = osp.join(demo_data, 'dota')
    train = build(cfg.train_dataloader.dataset, 'mmrotate', root)
    assert len(train) == 4
    item = train[0]
    gt = item['data_samples'].gt_instances
    assert type(gt.bboxes).__name__ == 'RotatedBoxes'
    assert gt.bboxes.tensor.shape[1] == 5 and len(gt) >= 2
    assert gt.labels.max() < len(gen.DOTA_CLASSES)
    # Oriented rectangles: the le90 angle is not always 0.
    angles = [
        a for i in range(len(train))
        for a in train[i]['data_samples'].gt_instances.bboxes.tensor[:, 4]
    ]
    assert max(abs(float(a)) for a in angles) > 0.1
    txt = os.listdir(osp.join(root, 'test', 'annfiles'))
    assert len(txt) == 2


def test_cli(tmp_path):
    subprocess.run([
        sys.executable,
        osp.join(REPO_ROOT, 'tools', 'make_demo_data.py'), '--out',
        str(tmp_path), '--datasets', 'voc', 'dota', '--num-train', '1',
        '--num-val', '1', '--img-size', '64'
    ],
                   check=True)
    assert sorted(os.listdir(tmp_path)) == ['VOCdevkit', 'dota']


def test_few_shot_split():
    """For each class in turn the first `shots` free images showing it;
    the rest is the validation split."""
    labels = [{0}, {0, 1}, {1}, {2}, {0}, {1, 2}, {3}, {0, 3}]
    # class 0 takes image 0, class 1 image 1 (the first free one showing
    # it), class 2 image 3, class 3 image 6.
    assert gen.few_shot_split(labels, 1, 4) == ([0, 1, 3, 6], [2, 4, 5, 7])
    # Two each: 0, 1 | 2, 5 | 3 (5 taken) | 6, 7.
    assert gen.few_shot_split(labels, 2, 4) == ([0, 1, 2, 3, 5, 6, 7], [4])


def test_voc_demo_splits(tmp_path):
    """The transfer demo's target: K images per class from the VOC2012
    pool, its validation split the rest of the pool, the test split
    VOC2007 test, all disjoint; the demo config reads these files."""
    root = gen.make_voc(str(tmp_path), num_train=32, num_val=4, img_size=64,
                        seed=0, shots=2)
    lists = osp.join(root, 'VOC2012', 'ImageSets', 'Main')

    def read(path):
        with open(path) as f:
            return f.read().split()
    pool = read(osp.join(lists, 'trainval.txt'))
    train = read(osp.join(lists, 'train_2shot.txt'))
    val = read(osp.join(lists, 'val.txt'))
    assert sorted(train + val) == sorted(pool) and not set(train) & set(val)
    assert len(train) == 2 * len(gen.VOC_CLASSES)
    shown = {c: 0 for c in gen.VOC_CLASSES}
    for img in train:
        tree = ET.parse(osp.join(root, 'VOC2012', 'Annotations', img + '.xml'))
        for name in {o.find('name').text for o in tree.findall('object')}:
            shown[name] += 1
    assert min(shown.values()) >= 2
    demo = Config.fromfile(osp.join(REPO_ROOT,
                                    'configs/demo/swin_fasterrcnn_voc.py'))
    assert demo.train_dataloader.dataset.ann_file == \
        f'VOC2012/ImageSets/Main/train_{gen.SHOTS}shot.txt'
    assert demo.val_dataloader.dataset.ann_file.endswith('VOC2012/'
                                                         'ImageSets/Main/'
                                                         'val.txt')
    assert demo.test_dataloader.dataset.ann_file.endswith('VOC2007/'
                                                          'ImageSets/Main/'
                                                          'test.txt')


def test_demo_sizes_and_version(tmp_path):
    """Without sizes each set gets its demo size; the COCO files carry the
    generator's version (step 1's cache key reads them)."""
    roots = gen.make_all(str(tmp_path), img_size=64, datasets=['coco'])
    ann = osp.join(roots['coco'], 'annotations')
    for split, num in (('train', 0), ('val', 1)):
        with open(osp.join(ann, f'instances_{split}2017.json')) as f:
            coco = json.load(f)
        assert len(coco['images']) == gen.DEMO_SIZES['coco'][num]
        assert coco['info']['version'] == gen.GENERATOR_VERSION
