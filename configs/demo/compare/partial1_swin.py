# Demo table row, Partial-1: ../swin_fasterrcnn_voc.py plus the Partial-1
# method base on the tiny Swin pretrained by step 1; its last block
# (stages.3.blocks.1, as the Mona paper's code), the neck and the heads
# train.
# `python tools/compare.py demo` trains it; `tools/train.py` runs it alone.
_base_ = [
    '../swin_fasterrcnn_voc.py', '../../_base_/methods/partial1_swin.py'
]
model = dict(
    backbone=dict(
        _base_.peft_backbone,
        convert_weights=False,
        init_cfg=_base_.swin_pretrained_init))
