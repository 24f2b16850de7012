# Demo table row, RepAdapter: ../vit_fasterrcnn_voc.py (the tiny ViT
# pretrained by step 1) plus the RepAdapter method base (bottleneck 8, 2
# groups, scale 1, as in the base). Its ratios are to the Full ViT row.
# `python tools/compare.py demo` trains it; `tools/train.py` runs it alone.
_base_ = ['../vit_fasterrcnn_voc.py', '../../_base_/methods/repadapter.py']
model = dict(
    backbone=dict(
        _base_.peft_backbone,
        convert_weights=False,
        init_cfg=_base_.vit_pretrained_init))
