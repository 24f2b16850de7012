# Demo table row, Fixed: ../swin_fasterrcnn_voc.py plus the Fixed method base
# on the tiny Swin pretrained by step 1; only the neck and the heads train.
# `python tools/compare.py demo` trains it; `tools/train.py` runs it alone.
_base_ = ['../swin_fasterrcnn_voc.py', '../../_base_/methods/fixed_swin.py']
model = dict(
    backbone=dict(
        _base_.peft_backbone,
        convert_weights=False,
        init_cfg=_base_.swin_pretrained_init))
