# Demo table row, Adapter: ../swin_fasterrcnn_voc.py plus the
# Adapter method base on the tiny Swin pretrained by step 1. Width 16: the
# base's 64 scaled as the tiny Swin's stage widths (32-256) are Swin-B's
# (128-1024) over 4, as Mona's 16 in ../mona_fasterrcnn_voc.py.
# `python tools/compare.py demo` trains it; `tools/train.py` runs it alone.
_base_ = ['../swin_fasterrcnn_voc.py', '../../_base_/methods/adapter_swin.py']
model = dict(
    backbone=dict(
        _base_.peft_backbone,
        adapters=dict(
            attn=dict(series=dict(_base_.peft_backbone.adapters.attn.series,
                                  hidden_dim=16)),
            ffn=dict(series=dict(_base_.peft_backbone.adapters.ffn.series,
                                 hidden_dim=16))),
        convert_weights=False,
        init_cfg=_base_.swin_pretrained_init))
