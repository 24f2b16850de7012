"""Synthetic annotated batches for the model scope."""
from typing import Tuple

import numpy as np
import torch


def _first_key(cfg, key: str):
    """The first value of ``key`` anywhere in a nested config."""
    if isinstance(cfg, dict):
        if key in cfg:
            return cfg[key]
        children = cfg.values()
    elif isinstance(cfg, (list, tuple)):
        children = cfg
    else:
        return None
    for child in children:
        found = _first_key(child, key)
        if found is not None:
            return found
    return None


def synthetic_batch(scope: str, model_cfg, batch_size: int,
                    img_size: Tuple[int, int]) -> dict:
    """A random annotated batch in the format the scope's models train on."""
    h, w = img_size
    num_classes = _first_key(model_cfg, 'num_classes') or 2
    if scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        with_mask = _first_key(model_cfg, 'mask_head') is not None
        return demo_mm_inputs(batch_size, (3, h, w),
                              num_items=[4] * batch_size,
                              num_classes=num_classes, with_mask=with_mask)
    if scope == 'mmrotate':
        from mmrotate.testing import demo_mm_inputs
        return demo_mm_inputs(batch_size, (3, h, w),
                              num_items=[4] * batch_size,
                              num_classes=num_classes, use_box_type=True)
    if scope == 'mmseg':
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        rng = np.random.RandomState(0)
        inputs, samples = [], []
        for idx in range(batch_size):
            inputs.append(
                torch.from_numpy(rng.randint(0, 255, (3, h, w), np.uint8)))
            sample = SegDataSample(metainfo=dict(
                img_id=idx, img_shape=(h, w), ori_shape=(h, w),
                pad_shape=(h, w), scale_factor=1.0, flip=False,
                flip_direction=None))
            labels = rng.randint(0, num_classes, (1, h, w))
            sample.gt_sem_seg = PixelData(data=torch.from_numpy(labels))
            samples.append(sample)
        return dict(inputs=inputs, data_samples=samples)
    raise ValueError(f'Config default_scope {scope!r} is not benchmarkable; '
                     'use an mmdet, mmseg or mmrotate config.')
