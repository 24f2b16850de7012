"""mmpretrain's VisionTransformer as a dense backbone, the way OpenMMLab
configs name it (``type='mmpretrain.VisionTransformer'``), takes the mmpeft
host as a one-line drop-in: it loads the stock backbone's weights and trains
a step with them frozen. And the DINOv2 configs, shrunk, train a step on the
generated data (UperNet ADE20K, Mask R-CNN COCO with the stride-14 map
resized for the pyramid)."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS as SEG_MODELS
from mmseg.structures import SegDataSample

from helpers import REPO_ROOT, tiny_runner_cfg
from test_comparison_configs import assert_only_adapters_moved, train_one_step

# The backbone of mmpose's ViTPose configs (configs/body_2d_keypoint/
# topdown_heatmap/coco/td-hm_ViTPose-base_8xb64-210e_coco-256x192.py), the
# OpenMMLab 2.0 configs that use mmpretrain's VisionTransformer as a dense
# backbone (no mmseg 1.x config was found that does), at tiny width, in an
# mmseg segmentor.
UPSTREAM_BACKBONE = dict(
    type='mmpretrain.VisionTransformer',
    arch=dict(embed_dims=32, num_layers=2, num_heads=2,
              feedforward_channels=64),
    img_size=(64, 48),
    patch_size=16,
    qkv_bias=True,
    drop_path_rate=0.3,
    with_cls_token=False,
    out_type='featmap',
    patch_cfg=dict(padding=2))
SEGMENTOR = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
        seg_pad_val=255, size=(64, 48)),
    backbone=UPSTREAM_BACKBONE,
    decode_head=dict(
        type='FCNHead', in_channels=32, channels=16, num_convs=1,
        num_classes=3, norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)))
# The drop-in: the host's type and its adapters (LoRA on qkv, Mona after
# each residual add, on the 4x3 map of this class-token-free ViT).
DROP_IN = dict(type='AdapterPretrainViT',
               adapters=dict(attn=dict(qkv=dict(type='LoRA', r=4)),
                             ffn=dict(post=dict(type='Mona', inner_dim=8))))


def seg_batch():
    torch.manual_seed(0)
    samples = []
    for _ in range(2):
        sample = SegDataSample(gt_sem_seg=PixelData(
            data=torch.randint(0, 3, (1, 64, 48))))
        sample.set_metainfo(dict(img_shape=(64, 48), ori_shape=(64, 48),
                                 pad_shape=(64, 48)))
        samples.append(sample)
    return dict(inputs=[torch.randint(0, 255, (3, 64, 48), dtype=torch.uint8)
                        for _ in samples], data_samples=samples)


def test_upstream_segmentor_takes_the_host_and_trains_it_frozen(tmp_path):
    init_default_scope('mmseg')
    torch.manual_seed(0)
    stock = SEG_MODELS.build(copy.deepcopy(SEGMENTOR))
    path = str(tmp_path / 'vit_backbone.pth')
    torch.save(stock.backbone.state_dict(), path)

    cfg = copy.deepcopy(SEGMENTOR)
    cfg['backbone'].update(DROP_IN,  # the one line a user changes
                           init_cfg=dict(type='Pretrained', checkpoint=path))
    model = SEG_MODELS.build(cfg)
    model.init_weights()  # the frozen-weight guard passes: all loaded
    backbone = model.backbone
    assert type(backbone).__name__ == 'AdapterPretrainViT'
    for name, value in stock.backbone.state_dict().items():
        assert torch.equal(backbone.state_dict()[name], value), name

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    adapters = set(f'backbone.{n}' for n in backbone.adapter_param_names())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == adapters | {
        n for n in before if n.startswith('decode_head.')}
    optim_wrapper = OptimWrapper(torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-3))
    model.train()
    losses = model.train_step(seg_batch(), optim_wrapper)
    assert all(torch.isfinite(v).all() for v in losses.values())
    after = dict(model.named_parameters())
    moved = {n for n in before if not torch.equal(after[n], before[n])}
    frozen = [n for n in before if n.startswith('backbone.')
              and n not in adapters]
    assert frozen and not moved & set(frozen)
    assert moved & adapters and any(n.startswith('decode_head.')
                                    for n in moved)


def tiny_dinov2(cfg):
    """A DINOv2-B config at width 32, 4 layers; necks and heads to match."""
    model = cfg.model
    model.backbone.update(arch=dict(embed_dims=32, num_layers=4, num_heads=2,
                                    feedforward_channels=64))
    if 'decode_head' in model:  # UperNet: layers 1-4 through MultiLevelNeck
        model.backbone.out_indices = (0, 1, 2, 3)
        model.neck.update(in_channels=[32] * 4, out_channels=32)
        model.decode_head.update(in_channels=[32] * 4, channels=32)
        model.auxiliary_head.update(in_channels=32, channels=16)
    else:  # Mask R-CNN: the last layer's map through the simple pyramid
        model.neck[0].in_channels = 32
        model.neck[1].update(in_channels=[32] * 4, out_channels=32)
        model.rpn_head.update(in_channels=32, feat_channels=32)
        model.roi_head.bbox_roi_extractor.out_channels = 32
        model.roi_head.bbox_head.update(in_channels=32, fc_out_channels=64)
        model.roi_head.mask_roi_extractor.out_channels = 32
        model.roi_head.mask_head.update(in_channels=32, conv_out_channels=32)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    return cfg


@pytest.mark.parametrize('config', [
    'configs/mona/maskrcnn_dinov2b_coco.py',
    'configs/lora/upernet_dinov2b_ade20k.py',
])
def test_dinov2_method_config_trains_a_step_of_adapters_only(
        config, demo_data, tmp_path):
    cfg = tiny_dinov2(tiny_runner_cfg(osp.join(REPO_ROOT, config), demo_data,
                                      tmp_path, img_scale=(96, 64)))
    cfg.default_hooks.checkpoint.interval = 10  # one step, no checkpoint
    assert_only_adapters_moved(*train_one_step(cfg))


RELEASES = {  # release -> (its file, the download URL the message names)
    'dinov2': ('checkpoints/dinov2_vitb14_pretrain.pth',
               'https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/'
               'dinov2_vitb14_pretrain.pth'),
    'eva02': ('checkpoints/eva02_B_pt_in21k_p14.pt',
              'https://huggingface.co/Yuxin-CV/EVA-02/resolve/main/eva02/pt/'
              'eva02_B_pt_in21k_p14.pt'),
    'sam': ('checkpoints/sam_vit_b_01ec64.pth',
            'https://dl.fbaipublicfiles.com/segment_anything/'
            'sam_vit_b_01ec64.pth'),
}
# A DINOv2 config with the backbone swapped as configs/_base_/models/
# eva02_b14.py and sam_b16.py show.
SWAPPED = '''
_base_ = [{config!r}, {model!r}]
model = dict(backbone=dict(
    _delete_=True, type={type!r}, out_indices=-1,
    adapters=dict(attn=dict(qkv=dict(type='LoRA', r=64))),
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint={file!r}),
    **_base_.{settings}){neck})
'''
SAM_NECK = (", neck=[dict(type='SimpleFeaturePyramid', in_channels=256), "
            "dict(type='mmdet.FPN', in_channels=[256] * 4, out_channels=256, "
            'num_outs=5)]')


def release_config(release, tmp_path):
    config = osp.join(REPO_ROOT, 'configs/lora/maskrcnn_dinov2b_coco.py')
    if release == 'dinov2':
        return config
    model, kind, settings = dict(
        eva02=('eva02_b14.py', 'AdapterViTEVA02', 'eva02_b14'),
        sam=('sam_b16.py', 'AdapterViTSAM', 'sam_b16'))[release]
    path = tmp_path / f'{release}.py'
    path.write_text(SWAPPED.format(
        config=config, model=osp.join(REPO_ROOT, 'configs/_base_/models',
                                      model),
        type=kind, file=RELEASES[release][0], settings=settings,
        neck=SAM_NECK if release == 'sam' else ''))
    return str(path)


@pytest.mark.parametrize('release', RELEASES)
def test_first_run_check_names_where_the_official_file_comes_from(
        release, tmp_path, monkeypatch):
    """No checkpoints/ here: the message names the release's file and its
    download command; the config builds its host."""
    from mmengine.config import Config

    from mmpeft.engine.preflight import report
    config = release_config(release, tmp_path)
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(config)
    message = report(cfg, config, 'train')
    file, url = RELEASES[release]
    assert (f'Missing checkpoint: {file}  (model.backbone.init_cfg.'
            'checkpoint)\n  download: mkdir -p checkpoints && wget -P '
            f'checkpoints {url}') in message
    init_default_scope('mmdet')
    from mmdet.registry import MODELS as DET_MODELS
    model = DET_MODELS.build(cfg.model)  # no init_weights: no download
    assert type(model.backbone).__name__ == cfg.model.backbone.type


def test_first_run_check_of_the_stock_baseline_names_the_converter(
        monkeypatch, tmp_path):
    from mmengine.config import Config

    from mmpeft.engine.preflight import report
    config = osp.join(REPO_ROOT, 'configs/baselines/upernet_dinov2b_ade20k.py')
    monkeypatch.chdir(tmp_path)
    message = report(Config.fromfile(config), config, 'train')
    assert ('python tools/convert_pretrain_vit.py dinov2 '
            'checkpoints/dinov2_vitb14_pretrain.pth '
            'checkpoints/dinov2_vitb14_pretrain_mmpretrain.pth') in message
