# Demo table row, AdaptFormer: ../swin_fasterrcnn_voc.py plus the AdaptFormer
# method base on the tiny Swin pretrained by step 1. Width 16: the base's 64
# scaled as the tiny Swin's stage widths (32-256) are Swin-B's (128-1024)
# over 4; scale 0.1 and dropout 0.1 as in the base.
# `python tools/compare.py demo` trains it; `tools/train.py` runs it alone.
_base_ = [
    '../swin_fasterrcnn_voc.py', '../../_base_/methods/adaptformer_swin.py'
]
model = dict(
    backbone=dict(
        _base_.peft_backbone,
        adapters=dict(
            ffn=dict(parallel=dict(_base_.peft_backbone.adapters.ffn.parallel,
                                   hidden_dim=16))),
        convert_weights=False,
        init_cfg=_base_.swin_pretrained_init))
