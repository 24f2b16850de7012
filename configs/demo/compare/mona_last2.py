# Demo table row, Mona in the last two stages only: ../mona_fasterrcnn_voc.py
# (Mona, inner width 16, on the tiny Swin pretrained by step 1) with
# adapter_blocks=dict(stages=[2, 3]): stages 0-1 stay stock and frozen, and
# no autograd graph is built before stage 2 (docs/benchmarks.md: the cost of
# this form). Compare its metric with the Mona row.
# `tools/compare.py demo` runs it as a row beside Mona (FORMS of
# mmpeft/comparison/plan.py); `tools/train.py` runs it alone.
_base_ = ['../mona_fasterrcnn_voc.py']
model = dict(backbone=dict(adapter_blocks=dict(stages=[2, 3])))
