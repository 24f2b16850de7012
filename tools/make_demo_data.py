"""Write tiny, deterministic datasets in the real on-disk formats of COCO,
ADE20K, Pascal VOC and DOTA.

Nothing can be downloaded where the tests and the demo run, so they train and
evaluate on these instead; the stock mmdet / mmseg / mmrotate dataset classes
read them unchanged, so the real loaders are what is exercised. Each image
shows a few shapes on a textured background. In COCO, ADE20K and DOTA the
class of a shape fixes both its form and its colour, so a small detector
learns them quickly. VOC is the demo's target domain, visibly different from
the COCO set its backbone is pretrained on (``make demo``, ``tools/compare.py
demo``): other forms (star, cross, hexagon, arrow), striped fills of any
colour (only the form tells the class), smaller objects, darker gridded
backgrounds.

The classes are the first ones of each stock class list, so label indices are
the same whether a config keeps the full list or selects only these. Layout
under the output root (inside each dataset directory, the layout the stock
configs expect under their ``data_root``):

- ``coco/``: ``annotations/instances_{train,val}2017.json`` (all 80
  categories listed; person, bicycle, car, motorcycle drawn) and
  ``{train,val}2017/*.jpg``.
- ``ade/ADEChallengeData2016/``: ``{images,annotations}/{training,
  validation}/``; label PNGs hold wall (1) as background, building, sky,
  floor, tree (2-5) as shapes, and 0 ("other", ignored) on the border.
- ``VOCdevkit/``: ``VOC2007/`` (trainval + test) and ``VOC2012/``
  (trainval), each with ``Annotations/``, ``JPEGImages/`` and
  ``ImageSets/Main/``; aeroplane, bicycle, bird, boat (drawn as star,
  cross, hexagon, arrow). VOC2012 also splits its trainval into the demo's
  data-limited training set ``train_{K}shot.txt`` (K images per class) and
  its validation set ``val.txt`` (the rest).
- ``dota/``: ``{trainval,test}/{images/*.png,annfiles/*.txt}``, the layout of
  mmrotate's patch splitter (``test/`` is labelled here); plane,
  baseball-diamond, bridge, ground-track-field.

Usage: ``python tools/make_demo_data.py --out data/demo``; see ``--help``.
Without ``--num-train`` / ``--num-val`` each dataset gets its demo size
(``DEMO_SIZES``): the transfer demo's source domain (COCO) is large, its
target (VOC) a small pool with a 64-image test split.
"""
import argparse
import json
import os
import os.path as osp
import xml.etree.ElementTree as ET

import cv2
import numpy as np

COCO_CLASSES = ('person', 'bicycle', 'car', 'motorcycle')
# The annotation files list all 80 COCO categories with their official ids,
# so that configs with the stock 80 classes map labels to ids as on COCO.
COCO_CATEGORIES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train',
    'truck', 'boat', 'traffic light', 'fire hydrant', 'stop sign',
    'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag',
    'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon',
    'bowl', 'banana', 'apple', 'sandwich', 'orange', 'broccoli', 'carrot',
    'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant',
    'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
    'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink',
    'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear',
    'hair drier', 'toothbrush')
COCO_IDS = (*range(1, 12), *range(13, 26), 27, 28, *range(31, 45),
            *range(46, 66), 67, 70, *range(72, 83), *range(84, 91))
VOC_CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat')
# ADE20K label values 1-5 (0 is "other"); the first is the background.
ADE20K_CLASSES = ('wall', 'building', 'sky', 'floor', 'tree')
DOTA_CLASSES = ('plane', 'baseball-diamond', 'bridge', 'ground-track-field')

# One saturated BGR colour per class index; backgrounds stay muted.
_COLOURS = ((40, 40, 220), (40, 200, 40), (220, 70, 40), (40, 215, 230))
_SHAPES = ('ellipse', 'rectangle', 'triangle', 'rotated_rectangle')
# The VOC set's forms: none of them is one of the COCO set's.
_TARGET_SHAPES = ('star', 'cross', 'hexagon', 'arrow')
# Outlines in units of the half-size, centred at 0 (rotated when drawn).
_OUTLINES = dict(
    star=np.array([((1.0 if i % 2 == 0 else 0.45) * np.sin(i * np.pi / 5),
                    -(1.0 if i % 2 == 0 else 0.45) * np.cos(i * np.pi / 5))
                   for i in range(10)]),
    cross=np.array([[-.3, -1], [.3, -1], [.3, -.3], [1, -.3], [1, .3],
                    [.3, .3], [.3, 1], [-.3, 1], [-.3, .3], [-1, .3],
                    [-1, -.3], [-.3, -.3]]),
    hexagon=np.array([(np.cos(i * np.pi / 3), np.sin(i * np.pi / 3))
                      for i in range(6)]),
    arrow=np.array([[-1, -.3], [.2, -.3], [.2, -.8], [1, 0], [.2, .8],
                    [.2, .3], [-1, .3]]),
)
DATASETS = ('coco', 'ade20k', 'voc', 'dota')
# Bumped whenever the images or annotations written for the same arguments
# change; written into the COCO annotation files (``info.version``), which
# the transfer demo's cached source model is keyed by
# (mmpeft/comparison/source.py).
GENERATOR_VERSION = 2
# (training, validation) images per dataset when not given: the transfer
# demo's source domain (COCO) trains a strong model on many images and stops
# on a 128-image validation set; its target (VOC) is a 64 + 64 image pool
# (VOC2007 / VOC2012 trainval) and a 64-image test split (VOC2007 test).
DEMO_SIZES = dict(coco=(1024, 128), ade20k=(64, 16), voc=(128, 64),
                  dota=(64, 16))
# The target domain's data-limited training set: K images per class.
SHOTS = 8


def _rng(seed, *keys):
    """Independent stream per (dataset, split) so each is reproducible."""
    return np.random.default_rng([seed, *keys])


def _blotched(rng, h, w, level, tint, blotch):
    """A colour of brightness ``level`` (range), tinted by up to ``tint``
    per channel, with smooth blotches of std ``blotch``; and the colour."""
    base = rng.uniform(*level) + rng.uniform(-tint, tint, size=3)
    blotches = cv2.resize(
        rng.normal(0, blotch, size=(h // 16 + 2, w // 16 + 2, 3)), (w, h),
        interpolation=cv2.INTER_CUBIC)
    return np.clip(base + blotches, 0, 255).astype(np.uint8), base


def _background(rng, h, w):
    """Muted colour + smooth blotches + a few thin lines + pixel noise."""
    img, _ = _blotched(rng, h, w, (80, 170), 15, 25)
    for _ in range(rng.integers(3, 8)):
        p1 = tuple(int(v) for v in rng.integers(0, (w, h)))
        p2 = tuple(int(v) for v in rng.integers(0, (w, h)))
        grey = int(rng.integers(60, 200))
        cv2.line(img, p1, p2, (grey, grey, grey), int(rng.integers(1, 3)))
    return img


def _add_noise(rng, img):
    noise = rng.normal(0, 6, size=img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _polygon(rng, shape, cx, cy, size):
    """Float (K, 2) polygon of `shape` centred at (cx, cy), extent ~size."""
    a = size / 2 * rng.uniform(0.75, 1.0)
    b = size / 2 * rng.uniform(0.6, 1.0)
    if shape == 'ellipse':
        pts = cv2.ellipse2Poly((int(cx), int(cy)), (int(a), int(b)),
                               int(rng.integers(0, 180)), 0, 360, 15)
        return pts[:-1].astype(np.float64)  # last point repeats the first
    if shape == 'rectangle':
        return np.array([[cx - a, cy - b], [cx + a, cy - b], [cx + a, cy + b],
                         [cx - a, cy + b]])
    if shape == 'triangle':
        apex = cx + rng.uniform(-0.5, 0.5) * a
        return np.array([[apex, cy - b], [cx + a, cy + b], [cx - a, cy + b]])
    if shape == 'rotated_rectangle':
        return cv2.boxPoints(((cx, cy), (2 * a, 2 * b * rng.uniform(0.4, 0.8)),
                              rng.uniform(0, 180))).astype(np.float64)
    if shape in _OUTLINES:
        theta = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(theta), -np.sin(theta)],
                        [np.sin(theta), np.cos(theta)]])
        return _OUTLINES[shape] * a @ rot.T + (cx, cy)
    raise ValueError(shape)


def _sample_objects(rng, h, w, shapes, num_range, size_range):
    """Random non-overlapping objects inside the image.

    Returns a list of (label, polygon); `shapes[label]` gives the form.
    """
    objects, boxes = [], []
    target = int(rng.integers(num_range[0], num_range[1] + 1))
    for _ in range(50 * target):
        if len(objects) == target:
            break
        label = int(rng.integers(len(shapes)))
        size = rng.uniform(*size_range) * min(h, w)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        poly = _polygon(rng, shapes[label], cx, cy, size)
        x0, y0 = poly.min(0)
        x1, y1 = poly.max(0)
        if x0 < 1 or y0 < 1 or x1 > w - 2 or y1 > h - 2:
            continue
        if any(x0 < bx1 + 3 and bx0 < x1 + 3 and y0 < by1 + 3 and by0 < y1 + 3
               for bx0, by0, bx1, by1 in boxes):
            continue
        boxes.append((x0, y0, x1, y1))
        objects.append((label, poly))
    return objects


def _draw(rng, img, label, poly):
    colour = np.clip(np.array(_COLOURS[label]) + rng.integers(-25, 26, 3), 0,
                     255)
    cv2.fillPoly(img, [np.round(poly).astype(np.int32)],
                 tuple(int(c) for c in colour))


def _scene(rng, h, w, shapes, num_range=(1, 3), size_range=(0.3, 0.55)):
    """A textured image with objects drawn on it, and the objects."""
    img = _background(rng, h, w)
    objects = _sample_objects(rng, h, w, shapes, num_range, size_range)
    for label, poly in objects:
        _draw(rng, img, label, poly)
    return _add_noise(rng, img), objects


def _target_background(rng, h, w):
    """Darker than the source domain's, with a faint grid."""
    img, base = _blotched(rng, h, w, (30, 90), 10, 15)
    step = int(rng.integers(12, 28))
    grey = int(base.mean() + 25)
    img[::step] = img[:, ::step] = grey
    return img


def _draw_striped(rng, img, poly):
    """Fill with stripes of a random colour and its darker shade, at a random
    angle and period: no colour belongs to a class."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    colour = rng.uniform(90, 255, size=3)
    theta = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[:h, :w]
    phase = (xx * np.cos(theta) + yy * np.sin(theta)) / rng.uniform(4, 9)
    light = (phase % 1) < 0.5
    inside = mask.astype(bool)
    img[inside & light] = colour.astype(np.uint8)
    img[inside & ~light] = (colour * 0.45).astype(np.uint8)


def _target_scene(rng, h, w, num_range=(2, 5), size_range=(0.18, 0.38)):
    """The VOC set's image: striped target-domain forms on a dark grid."""
    img = _target_background(rng, h, w)
    objects = _sample_objects(rng, h, w, _TARGET_SHAPES, num_range,
                              size_range)
    for _, poly in objects:
        _draw_striped(rng, img, poly)
    return _add_noise(rng, img), objects


def _sizes(img_size):
    """(height, width) of the 4:3 images used for COCO and VOC."""
    return img_size * 3 // 4, img_size


def make_coco(root, num_train=64, num_val=16, img_size=256, seed=0):
    """COCO instance format: polygons, area, iscrowd, xywh boxes.

    Writes ``root/annotations/instances_{train,val}2017.json`` and the images
    under ``root/{train,val}2017/``. Returns ``root``.
    """
    h, w = _sizes(img_size)
    categories = [
        dict(id=cat_id, name=name, supercategory='thing')
        for cat_id, name in zip(COCO_IDS, COCO_CATEGORIES)
    ]
    ann_id = 1
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    for split_idx, (split, num) in enumerate((('train2017', num_train),
                                              ('val2017', num_val))):
        rng = _rng(seed, 0, split_idx)
        os.makedirs(osp.join(root, split), exist_ok=True)
        images, annotations = [], []
        for i in range(num):
            img_id = split_idx * 100000 + i + 1
            file_name = f'{img_id:012d}.jpg'
            img, objects = _scene(rng, h, w, _SHAPES)
            cv2.imwrite(osp.join(root, split, file_name), img)
            images.append(
                dict(id=img_id, file_name=file_name, height=h, width=w))
            for label, poly in objects:
                x0, y0 = poly.min(0)
                x1, y1 = poly.max(0)
                annotations.append(
                    dict(
                        id=ann_id,
                        image_id=img_id,
                        category_id=COCO_IDS[label],
                        segmentation=[np.round(poly, 2).ravel().tolist()],
                        area=float(cv2.contourArea(poly.astype(np.float32))),
                        bbox=[float(x0), float(y0),
                              float(x1 - x0), float(y1 - y0)],
                        iscrowd=0))
                ann_id += 1
        with open(
                osp.join(root, 'annotations', f'instances_{split}.json'),
                'w') as f:
            json.dump(
                dict(
                    info=dict(description='mmpeft demo data',
                              version=GENERATOR_VERSION),
                    images=images,
                    annotations=annotations,
                    categories=categories), f)
    return root


def make_ade20k(root, num_train=64, num_val=16, img_size=256, seed=0):
    """ADE20K SceneParsing format: JPEG images + PNG label maps.

    Label maps hold ADE20K values (0 = other, ignored by reduce_zero_label;
    1 = wall as the background; shapes are building/sky/floor/tree).
    Writes ``root/{images,annotations}/{training,validation}/`` and returns
    ``root``.
    """
    border = max(2, img_size // 32)
    for split_idx, (split, prefix, num) in enumerate(
        (('training', 'ADE_train', num_train),
         ('validation', 'ADE_val', num_val))):
        rng = _rng(seed, 1, split_idx)
        img_dir = osp.join(root, 'images', split)
        ann_dir = osp.join(root, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(num):
            img, objects = _scene(
                rng, img_size, img_size, _SHAPES, num_range=(2, 4),
                size_range=(0.2, 0.45))
            seg = np.ones((img_size, img_size), np.uint8)  # wall
            for label, poly in objects:
                cv2.fillPoly(seg, [np.round(poly).astype(np.int32)], label + 2)
            seg[:border] = seg[-border:] = 0
            seg[:, :border] = seg[:, -border:] = 0
            name = f'{prefix}_{i + 1:08d}'
            cv2.imwrite(osp.join(img_dir, name + '.jpg'), img)
            cv2.imwrite(osp.join(ann_dir, name + '.png'), seg)
    return root


def _voc_xml(folder, file_name, h, w, objects):
    ann = ET.Element('annotation')
    ET.SubElement(ann, 'folder').text = folder
    ET.SubElement(ann, 'filename').text = file_name
    size = ET.SubElement(ann, 'size')
    for key, val in (('width', w), ('height', h), ('depth', 3)):
        ET.SubElement(size, key).text = str(val)
    ET.SubElement(ann, 'segmented').text = '0'
    for label, poly in objects:
        obj = ET.SubElement(ann, 'object')
        ET.SubElement(obj, 'name').text = VOC_CLASSES[label]
        ET.SubElement(obj, 'pose').text = 'Unspecified'
        ET.SubElement(obj, 'truncated').text = '0'
        ET.SubElement(obj, 'difficult').text = '0'
        box = ET.SubElement(obj, 'bndbox')
        # VOC boxes are 1-based inclusive pixel coordinates.
        x0, y0 = np.round(poly.min(0)).astype(int) + 1
        x1, y1 = np.round(poly.max(0)).astype(int) + 1
        for key, val in (('xmin', x0), ('ymin', y0), ('xmax', x1),
                         ('ymax', y1)):
            ET.SubElement(box, key).text = str(val)
    return ET.ElementTree(ann)


def few_shot_split(image_labels, shots, num_classes):
    """Indices of a data-limited training set and of the rest: for each
    class in turn, the first ``shots`` images (in order) that show it and are
    not taken yet. Every class then appears in at least ``shots`` training
    images (images show several classes) when the pool has enough."""
    taken = []
    for label in range(num_classes):
        free = [i for i, labels in enumerate(image_labels)
                if label in labels and i not in taken]
        taken += free[:shots]
    taken.sort()
    return taken, [i for i in range(len(image_labels)) if i not in taken]


def _write_list(path, ids):
    with open(path, 'w') as f:
        f.write(''.join(i + '\n' for i in ids))


def make_voc(root, num_train=64, num_val=16, img_size=256, seed=0,
             shots=SHOTS):
    """Pascal VOC format (XML boxes, JPEGImages, ImageSets/Main lists), in
    the target domain's style (``_target_scene``).

    VOC2007 gets half of the training images as trainval and all validation
    images as test; VOC2012 gets the other half as trainval, so the stock
    07+12 configs find both. VOC2012's trainval is also split in two for the
    transfer demo: ``train_{shots}shot.txt`` (``few_shot_split``: ``shots``
    images per class) and ``val.txt`` (the others), a validation set apart
    from the training images and from the VOC2007 test split. Writes
    ``root/VOC{2007,2012}/`` and returns ``root`` (the VOCdevkit directory).
    """
    h, w = _sizes(img_size)
    num_07 = (num_train + 1) // 2
    splits = (('VOC2007', 'trainval', num_07, '{:06d}'),
              ('VOC2007', 'test', num_val, '{:06d}'),
              ('VOC2012', 'trainval', num_train - num_07, '2012_{:06d}'))
    start = {'VOC2007': 1, 'VOC2012': 1}
    for split_idx, (year, split, num, id_fmt) in enumerate(splits):
        rng = _rng(seed, 2, split_idx)
        sub = osp.join(root, year)
        for d in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
            os.makedirs(osp.join(sub, d), exist_ok=True)
        ids, labels = [], []
        for i in range(start[year], start[year] + num):
            img_id = id_fmt.format(i)
            img, objects = _target_scene(rng, h, w)
            cv2.imwrite(osp.join(sub, 'JPEGImages', img_id + '.jpg'), img)
            _voc_xml(year, img_id + '.jpg', h, w, objects).write(
                osp.join(sub, 'Annotations', img_id + '.xml'))
            ids.append(img_id)
            labels.append({label for label, _ in objects})
        start[year] += num
        lists = osp.join(sub, 'ImageSets', 'Main')
        _write_list(osp.join(lists, split + '.txt'), ids)
        if year == 'VOC2012':
            train, rest = few_shot_split(labels, shots, len(VOC_CLASSES))
            _write_list(osp.join(lists, f'train_{shots}shot.txt'),
                        [ids[i] for i in train])
            _write_list(osp.join(lists, 'val.txt'), [ids[i] for i in rest])
    return root


def make_dota(root, num_train=64, num_val=16, img_size=256, seed=0):
    """DOTA format as produced by mmrotate's patch splitter: square PNG
    patches and one txt per image with ``x1 y1 ... x4 y4 class difficulty``
    lines (oriented rectangles). Writes ``root/{trainval,test}/{images,
    annfiles}/``; unlike real DOTA, test/ is labelled so it can be scored.
    Returns ``root``.
    """
    shapes = ('rotated_rectangle', ) * len(DOTA_CLASSES)
    for split_idx, (split, num) in enumerate((('trainval', num_train),
                                              ('test', num_val))):
        rng = _rng(seed, 3, split_idx)
        img_dir = osp.join(root, split, 'images')
        ann_dir = osp.join(root, split, 'annfiles')
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(num):
            name = f'P{split_idx}{i + 1:04d}__{img_size}__0___0'
            img, objects = _scene(
                rng, img_size, img_size, shapes, num_range=(2, 4),
                size_range=(0.2, 0.45))
            cv2.imwrite(osp.join(img_dir, name + '.png'), img)
            with open(osp.join(ann_dir, name + '.txt'), 'w') as f:
                for label, poly in objects:
                    coords = ' '.join(f'{v:.1f}' for v in poly.ravel())
                    f.write(f'{coords} {DOTA_CLASSES[label]} 0\n')
    return root


# Sub-directory of each dataset under the common root; the same relative
# layout as the stock configs' data roots.
SUBDIRS = dict(
    coco='coco', ade20k='ade/ADEChallengeData2016', voc='VOCdevkit',
    dota='dota')
_MAKERS = dict(coco=make_coco, ade20k=make_ade20k, voc=make_voc,
               dota=make_dota)


def make_all(root, num_train=None, num_val=None, img_size=256, seed=0,
             datasets=DATASETS):
    """Write every dataset in `datasets` under `root` (see SUBDIRS), with
    `num_train` / `num_val` images each (None: its ``DEMO_SIZES``).

    Returns {dataset name: dataset root}.
    """
    return {
        name: _MAKERS[name](
            osp.join(root, SUBDIRS[name]),
            DEMO_SIZES[name][0] if num_train is None else num_train,
            DEMO_SIZES[name][1] if num_val is None else num_val, img_size,
            seed)
        for name in datasets
    }


def parse_args():
    parser = argparse.ArgumentParser(
        description='Generate tiny COCO / ADE20K / VOC / DOTA datasets of '
        'coloured shapes, in the real on-disk formats.')
    parser.add_argument(
        '--out', default='data/demo', help='root directory to write into')
    parser.add_argument(
        '--datasets',
        nargs='+',
        choices=DATASETS,
        default=list(DATASETS),
        help='which datasets to write')
    sizes = ', '.join(f'{name} {train} / {val}'
                      for name, (train, val) in DEMO_SIZES.items())
    parser.add_argument(
        '--num-train', type=int,
        help=f'training images of every set (default per set: {sizes})')
    parser.add_argument(
        '--num-val', type=int,
        help='validation (VOC: test) images of every set (default: as above)')
    parser.add_argument(
        '--img-size',
        type=int,
        default=256,
        help='image width in pixels (COCO/VOC are 4:3, ADE20K/DOTA square)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    return parser.parse_args()


def main():
    args = parse_args()
    roots = make_all(args.out, args.num_train, args.num_val, args.img_size,
                     args.seed, args.datasets)
    for name, path in roots.items():
        print(f'{name}: {path}')


if __name__ == '__main__':
    main()
