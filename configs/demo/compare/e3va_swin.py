# Demo table row, E3VA: ../swin_fasterrcnn_voc.py plus the E3VA method base on
# the tiny Swin pretrained by step 1: the frozen Swin runs without a graph
# and the highway of dual low-rank adapters trains beside it. Bottleneck 16:
# the base's 64 over 4, as the tiny Swin's stage widths (32-256) are Swin-B's
# (128-1024) over 4; rank 4: the base's 8 halved, as the LoRand row's kernel.
# `python tools/compare.py demo` trains it; `tools/train.py` runs it alone.
_base_ = ['../swin_fasterrcnn_voc.py', '../../_base_/methods/e3va_swin.py']
model = dict(
    backbone=dict(
        _base_.peft_backbone,
        adapter_cfg=dict(type='E3VAAdapter', hidden_dim=16, rank=4),
        convert_weights=False,
        init_cfg=_base_.swin_pretrained_init))
