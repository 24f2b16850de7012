# Demo table row, MiMi: ../swin_fasterrcnn_voc.py plus the MiMi method base on
# the tiny Swin pretrained by step 1: adapters of width dim / 4 (sigma0 = 4)
# halved by global neuron score every quarter of the schedule (rho 0.5; with
# the 150 target iterations: rounds at 37, 74, 111) down to dim / 32
# (sigma_target), the paper's ratios.
# `python tools/compare.py demo` trains it; `tools/train.py` runs it alone.
_base_ = ['../swin_fasterrcnn_voc.py', '../../_base_/methods/mimi.py']
model = dict(
    backbone=dict(
        _base_.peft_backbone, init_cfg=_base_.swin_pretrained_init))
custom_hooks = [
    *_base_.custom_hooks,
    dict(
        _base_.mimi_prune,
        interval=_base_.target_mimi_interval,
        by_epoch=False)
]
