# DOTA-v1.0 oriented detection, le90, on 1024x1024 patches (stock mmrotate
# dota.py). Expected layout: the output of mmrotate's
# tools/data/dota/split/img_split.py, i.e. data/split_ss_dota/
# {trainval,test}/{images/*.png,annfiles/*.txt}, each txt line
# `x1 y1 x2 y2 x3 y3 x4 y4 class difficulty`. As in the stock config the
# model is validated on trainval: DOTA's test labels are not public.
# tools/make_demo_data.py writes the same layout (with labelled test/).
dataset_type = 'DOTADataset'
data_root = 'data/split_ss_dota/'
# What tools/train.py / tools/test.py print when the data is missing
# (mmpeft/engine/preflight.py): layout, download, and the root under data/demo
# where tools/make_demo_data.py writes the same layout.
download_dota = dict(
    name='DOTA-v1.0, split into 1024x1024 patches',
    data_root=data_root,
    layout='data/split_ss_dota/{trainval,test}/{images/*.png,annfiles/*.txt}',
    command='download DOTA-v1.0 train/val/test into data/DOTA/ (registration required: https://captain-whu.github.io/DOTA/dataset.html), then in an mmrotate checkout: python tools/data/dota/split/img_split.py --base-json tools/data/dota/split/split_configs/ss_trainval.json && python tools/data/dota/split/img_split.py --base-json tools/data/dota/split/split_configs/ss_test.json (writes data/split_ss_dota/)',  # noqa
    demo_root='data/demo/dota/')
backend_args = None

train_pipeline = [
    dict(type='mmdet.LoadImageFromFile', backend_args=backend_args),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.Resize', scale=(1024, 1024), keep_ratio=True),
    dict(
        type='mmdet.RandomFlip',
        prob=0.75,
        direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='mmdet.PackDetInputs')
]
val_pipeline = [
    dict(type='mmdet.LoadImageFromFile', backend_args=backend_args),
    dict(type='mmdet.Resize', scale=(1024, 1024), keep_ratio=True),
    # after Resize: the ground truth is evaluated at the original scale
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(
        type='mmdet.PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='trainval/annfiles/',
        data_prefix=dict(img_path='trainval/images/'),
        img_shape=(1024, 1024),
        filter_cfg=dict(filter_empty_gt=True),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='trainval/annfiles/',
        data_prefix=dict(img_path='trainval/images/'),
        img_shape=(1024, 1024),
        test_mode=True,
        pipeline=val_pipeline))
test_dataloader = val_dataloader

# With mmpeft imported, DOTAMetric takes `nproc` (processes computing TP / FP;
# mmrotate alone always spawns 4); tools/train.py and tools/test.py set it to
# the loader's num_workers when the config leaves it out (mmpeft/compat.py).
val_evaluator = dict(type='DOTAMetric', metric='mAP')
test_evaluator = val_evaluator
