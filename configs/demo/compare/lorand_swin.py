# Demo table row, LoRand: ../swin_fasterrcnn_voc.py plus the LoRand method
# base on the tiny Swin pretrained by step 1, as the base sets it: its
# bottleneck is C/2 at any width (16-128 here), 4 branches of 8x8 kernels.
# `python tools/compare.py demo` trains it; `tools/train.py` runs it alone.
_base_ = ['../swin_fasterrcnn_voc.py', '../../_base_/methods/lorand_swin.py']
model = dict(
    backbone=dict(
        _base_.peft_backbone,
        convert_weights=False,
        init_cfg=_base_.swin_pretrained_init))
