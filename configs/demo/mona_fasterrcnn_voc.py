# CPU demo, step 2 of 2: Mona fine-tuning. Step 1 (swin_fasterrcnn_voc.py)
# trained the stock tiny Swin detector; here its backbone is loaded and frozen,
# a Mona adapter goes after each residual of every block, and the adapters,
# the neck and the heads (fresh, as after ImageNet pretraining) train on the
# same generated VOC-format data with the same schedule. The PEFT hooks
# (../_base_/peft_hooks.py) log the parameter table and write the merged
# deploy checkpoint + config and the adapter-only checkpoint beside
# iter_300.pth.
_base_ = ['./swin_fasterrcnn_voc.py', '../_base_/peft_hooks.py']

# Written by step 1, `tools/train.py configs/demo/swin_fasterrcnn_voc.py`, in
# its default work dir. mmdet's Swin keeps the `backbone.` keys of a detector
# checkpoint (prefix stripped), so the backbone alone is loaded. (`_delete_`:
# step 1 has init_cfg=None, which a dict cannot be merged into.)
pretrained = 'work_dirs/swin_fasterrcnn_voc/iter_300.pth'
model = dict(
    backbone=dict(
        _base_.tiny_mona_swin,
        init_cfg=dict(_delete_=True, type='Pretrained',
                      checkpoint=pretrained)))
