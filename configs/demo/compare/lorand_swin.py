# Demo table row, LoRand: ../swin_fasterrcnn_voc.py plus the LoRand method
# base on the tiny Swin pretrained by step 1. Bottleneck 16 and kernel 4: the
# base's 64 over 4, as the tiny Swin's stage widths (32-256) are Swin-B's
# (128-1024) over 4, and its kernel 8 halved to stay below the bottleneck;
# 2 branches as in the base.
# `python tools/compare.py demo` trains it; `tools/train.py` runs it alone.
_base_ = ['../swin_fasterrcnn_voc.py', '../../_base_/methods/lorand_swin.py']
model = dict(
    backbone=dict(
        _base_.peft_backbone,
        adapters=dict(
            attn=dict(series=dict(type='LoRand', hidden_dim=16, num_branch=2,
                                  kernel_dim=4)),
            ffn=dict(series=dict(type='LoRand', hidden_dim=16, num_branch=2,
                                 kernel_dim=4))),
        convert_weights=False,
        init_cfg=_base_.swin_pretrained_init))
