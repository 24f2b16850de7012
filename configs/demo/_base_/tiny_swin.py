# What the CPU demos share: a 4-stage, 32-wide Swin (the Swin-T layout shrunk
# to train in minutes on a CPU), the same with Mona adapters, a 4-layer,
# 64-wide ViT with its simple feature pyramid, where the transfer demo's
# pretrained backbones are placed, a 300-iteration schedule (batch 4,
# warm-up 50, lr 1e-3, one checkpoint at the end, seed 0) and the transfer
# demo's target schedule and data-limited split (end of file). Besides
# `randomness` these are variables that each demo picks by `_base_.<name>`:
# the stock runtime, schedule and model bases own the real keys. A demo that
# uses mmpeft imports it in its own body (not here: the method bases that
# compare/*.py inherit import it too, and mmengine refuses a key that two
# bases set).
# Fixed seed: the demos' metrics are reproducible from run to run.
randomness = dict(seed=0)

tiny_swin = dict(
    type='SwinTransformer',
    embed_dims=32,
    depths=[1, 1, 2, 1],
    num_heads=[1, 2, 4, 8],
    drop_path_rate=0.1,
    out_indices=(0, 1, 2, 3),
    convert_weights=False,
    init_cfg=None)
tiny_swin_widths = [32, 64, 128, 256]  # per stage: the neck's in_channels
# Mona's inner width: the paper's 64 is half Swin-B's embed_dims (128). 16 is
# half of 32, so each stage keeps the paper's bottleneck ratio (1/2, 1/4, 1/8,
# 1/16 of the stage width); 64 would be wider than the stage-1 tokens.
tiny_mona_swin = dict(
    tiny_swin,
    type='MonaSwinTransformer',
    adapter_cfg=dict(type='Mona', inner_dim=16, dropout=0.1))

# The transfer demo (`make demo`, `tools/compare.py demo`, README "Demo
# protocol"): step 1 trains the stock tiny backbone on the COCO-format shapes
# (swin_fasterrcnn_coco.py, vit_fasterrcnn_coco.py, the source domain) until
# its validation mAP stops improving, once: tools/compare.py caches the best
# checkpoint outside the work dirs (mmpeft/comparison/source.py) and places
# it here; every method then fine-tunes it on the VOC-format set (the target
# domain). mmdet's Swin reads the `backbone.` keys of a whole detector
# checkpoint; mmseg's ViT needs a bare backbone state dict.
swin_pretrained = 'work_dirs/demo_source/swin_source.pth'
vit_pretrained = 'work_dirs/demo_source/vit_source_backbone.pth'
swin_pretrained_init = dict(type='Pretrained', checkpoint=swin_pretrained)
vit_pretrained_init = dict(type='Pretrained', checkpoint=vit_pretrained)

# ViT-B/16's layout shrunk (mmseg VisionTransformer arguments), with 8-pixel
# patches: with 16-pixel ones the tiny ViT detector stayed near chance on
# the demo shapes (COCO bbox mAP 0.011 on the generated val set after 300
# iterations, and after 900;
# `tools/train.py configs/demo/vit_fasterrcnn_coco.py
# --cfg-options model.backbone.patch_size=16
# "model.neck.0.scale_factors=[4.0,2.0,1.0,0.5]"`), with 8 it reaches 0.731
# in 300. The position
# table is sized for the 256x192 demo images; the simple feature pyramid
# turns the stride-8 map into strides 4-32.
tiny_vit = dict(
    type='mmseg.VisionTransformer',
    img_size=(192, 256),
    patch_size=8,
    embed_dims=64,
    num_layers=4,
    num_heads=2,
    mlp_ratio=4,
    qkv_bias=True,
    drop_path_rate=0.1,
    with_cls_token=True,
    final_norm=True,
    out_indices=-1,
    norm_cfg=dict(type='LN', eps=1e-6),
    init_cfg=None)
tiny_vit_neck = [
    dict(type='SimpleFeaturePyramid', in_channels=64,
         scale_factors=(2.0, 1.0, 0.5, 0.25)),
    dict(type='mmdet.FPN', in_channels=[64] * 4, out_channels=64, num_outs=5)
]

# The transfer demo's detector (swin_fasterrcnn_coco.py, swin_fasterrcnn_voc.py
# and every method over them): Faster R-CNN at width 64 for the generators'
# four classes, boxes only, on 256x192 images. `model = dict(backbone=...,
# **tiny_faster_rcnn)`; a ViT replaces the neck.
tiny_faster_rcnn = dict(
    neck=dict(in_channels=tiny_swin_widths, out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=4)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=500, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))
box_img_scale = (256, 192)
box_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=box_img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
box_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=box_img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]

max_iters = 300
iter_train_cfg = dict(
    _delete_=True,
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=max_iters)
warmup = dict(
    type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50)
# The detection demos: warm-up, then cosine decay to the last iteration.
detection_schedule = [
    warmup,
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters)
]
iter_default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval=max_iters))

# The transfer demo's target (README "Demo protocol"): a data-limited
# adaptation, `fewshot` training images per class (VOC2012
# train_{fewshot}shot.txt, written by tools/make_demo_data.py), validated on
# the rest of the VOC2012 pool (val.txt) and tested on VOC2007 test; 150
# iterations of batch 4 (about 19 epochs of the 32 images), 25 warm-up, then
# cosine decay. The length is set by the time budget of `make compare-demo`
# (every method, three seeds, <= 45 min on 2 cores), not by any result.
fewshot = 8
fewshot_list = f'VOC2012/ImageSets/Main/train_{fewshot}shot.txt'
target_max_iters = 150
target_train_cfg = dict(
    _delete_=True,
    type='IterBasedTrainLoop',
    max_iters=target_max_iters,
    val_interval=target_max_iters)
target_schedule = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=25),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=25,
        end=target_max_iters)
]
# MiMi's three prune rounds at each quarter of the target schedule.
target_mimi_interval = target_max_iters // 4
target_default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=target_max_iters))
