# ADE20K (SceneParsing, 150 classes) with 512x512 crops (stock mmseg
# ade20k.py). Expected layout: data/ade/ADEChallengeData2016/
# {images,annotations}/{training,validation}; label 0 means "other" and is
# ignored (reduce_zero_label). tools/make_demo_data.py writes the same layout.
dataset_type = 'ADE20KDataset'
data_root = 'data/ade/ADEChallengeData2016'
# What tools/train.py / tools/test.py print when the data is missing
# (mmpeft/engine/preflight.py): layout, download, and the root under data/demo
# where tools/make_demo_data.py writes the same layout.
download_ade20k = dict(
    name='ADE20K (SceneParsing)',
    data_root=data_root,
    layout='data/ade/ADEChallengeData2016/{images,annotations}/{training,validation}',
    command='mkdir -p data/ade && cd data/ade && wget http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip && unzip -q ADEChallengeData2016.zip',  # noqa
    demo_root='data/demo/ade/ADEChallengeData2016')
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(
        type='RandomResize',
        scale=(2048, 512),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    # after Resize: the ground truth is evaluated at the original scale
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
