# COCO 2017 instance segmentation (stock mmdet coco_instance.py).
# Expected layout: data/coco/{annotations/instances_{train,val}2017.json,
# train2017/, val2017/}. tools/make_demo_data.py writes the same layout.
dataset_type = 'CocoDataset'
data_root = 'data/coco/'
# What tools/train.py / tools/test.py print when the data is missing
# (mmpeft/engine/preflight.py): layout, download, and the root under data/demo
# where tools/make_demo_data.py writes the same layout.
download_coco = dict(
    name='COCO 2017',
    data_root=data_root,
    layout='data/coco/{annotations/instances_{train,val}2017.json, train2017/*.jpg, val2017/*.jpg}',
    command='mkdir -p data/coco && cd data/coco && for f in zips/train2017.zip zips/val2017.zip annotations/annotations_trainval2017.zip; do wget http://images.cocodataset.org/$f && unzip -q $(basename $f); done',  # noqa
    demo_root='data/demo/coco/')
backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    # after Resize: the ground truth is evaluated at the original scale
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric=['bbox', 'segm'],
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator
