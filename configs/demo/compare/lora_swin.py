# Demo table row, LoRA: ../swin_fasterrcnn_voc.py plus the LoRA method base on
# the tiny Swin pretrained by step 1. Rank 16 on q and on v, alpha 1 as in
# the base (scale 1 / r): its 64 scaled as the tiny Swin's stage widths
# (32-256) are Swin-B's (128-1024) over 4.
# `python tools/compare.py demo` trains it; `tools/train.py` runs it alone.
_base_ = ['../swin_fasterrcnn_voc.py', '../../_base_/methods/lora_swin.py']
model = dict(
    backbone=dict(
        _base_.peft_backbone,
        adapters=dict(
            attn=dict(qkv=dict(_base_.peft_backbone.adapters.attn.qkv,
                               r=16))),
        convert_weights=False,
        init_cfg=_base_.swin_pretrained_init))
