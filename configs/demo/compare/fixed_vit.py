# Demo table row, Fixed on the ViT host: ../vit_fasterrcnn_voc.py plus the
# Fixed method base on the tiny ViT pretrained by step 1; only the neck and
# the heads train. The reference of the ViT rows' "vs Fixed" column.
# `python tools/compare.py demo` trains it; `tools/train.py` runs it alone.
_base_ = ['../vit_fasterrcnn_voc.py', '../../_base_/methods/fixed_vit.py']
model = dict(
    backbone=dict(
        _base_.peft_backbone,
        convert_weights=False,
        init_cfg=_base_.vit_pretrained_init))
