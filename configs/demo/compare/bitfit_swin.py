# Demo table row, BitFit: ../swin_fasterrcnn_voc.py plus the BitFit method
# base on the tiny Swin pretrained by step 1; the backbone's parameters named
# 'bias' (bias vectors and relative-position bias tables), the neck and the
# heads train.
# `python tools/compare.py demo` trains it; `tools/train.py` runs it alone.
_base_ = ['../swin_fasterrcnn_voc.py', '../../_base_/methods/bitfit_swin.py']
model = dict(
    backbone=dict(
        _base_.peft_backbone,
        convert_weights=False,
        init_cfg=_base_.swin_pretrained_init))
