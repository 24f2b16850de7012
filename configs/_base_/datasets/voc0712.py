# Pascal VOC: train on VOC2007+2012 trainval, test on VOC2007 test
# (stock mmdet voc0712.py). Expected layout: data/VOCdevkit/VOC{2007,2012}/
# {Annotations,JPEGImages,ImageSets/Main}; tools/make_demo_data.py writes it.
dataset_type = 'VOCDataset'
data_root = 'data/VOCdevkit/'
# What tools/train.py / tools/test.py print when the data is missing
# (mmpeft/engine/preflight.py): layout, download, and the root under data/demo
# where tools/make_demo_data.py writes the same layout.
download_voc0712 = dict(
    name='Pascal VOC 2007 + 2012',
    data_root=data_root,
    layout='data/VOCdevkit/VOC{2007,2012}/{Annotations,JPEGImages,ImageSets/Main}',
    command='mkdir -p data && cd data && for f in voc2007/VOCtrainval_06-Nov-2007.tar voc2007/VOCtest_06-Nov-2007.tar voc2012/VOCtrainval_11-May-2012.tar; do wget http://host.robots.ox.ac.uk/pascal/VOC/$f && tar xf $(basename $f); done',  # noqa
    demo_root='data/demo/VOCdevkit/')
backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(1000, 600), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1000, 600), keep_ratio=True),
    # after Resize: the ground truth is evaluated at the original scale
    dict(type='LoadAnnotations', with_bbox=True),
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
        type='RepeatDataset',
        times=3,
        dataset=dict(
            type='ConcatDataset',
            # VOCDataset adds a per-year `dataset_type` to its metainfo,
            # which ConcatDataset would otherwise reject as a mismatch.
            ignore_keys=['dataset_type'],
            datasets=[
                dict(
                    type=dataset_type,
                    data_root=data_root,
                    ann_file='VOC2007/ImageSets/Main/trainval.txt',
                    data_prefix=dict(sub_data_root='VOC2007/'),
                    filter_cfg=dict(
                        filter_empty_gt=True, min_size=32, bbox_min_size=32),
                    pipeline=train_pipeline,
                    backend_args=backend_args),
                dict(
                    type=dataset_type,
                    data_root=data_root,
                    ann_file='VOC2012/ImageSets/Main/trainval.txt',
                    data_prefix=dict(sub_data_root='VOC2012/'),
                    filter_cfg=dict(
                        filter_empty_gt=True, min_size=32, bbox_min_size=32),
                    pipeline=train_pipeline,
                    backend_args=backend_args)
            ])))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='VOC2007/ImageSets/Main/test.txt',
        data_prefix=dict(sub_data_root='VOC2007/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

# VOC2007 test is scored with the 11-point interpolated AP.
val_evaluator = dict(type='VOCMetric', metric='mAP', eval_mode='11points')
test_evaluator = val_evaluator
