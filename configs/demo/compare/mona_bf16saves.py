# Demo table row, Mona with bfloat16 frozen saves: ../mona_fasterrcnn_voc.py
# (Mona, inner width 16, on the tiny Swin pretrained by step 1) with
# frozen_activations_dtype='bfloat16': what the frozen backbone keeps for
# backward is stored in bfloat16 (less training memory, approximate
# gradients; adapters and weights stay fp32). Compare its metric with the
# Mona row to see what the approximation costs.
# `tools/compare.py demo` runs it as a row beside Mona (FORMS of
# mmpeft/comparison/plan.py); `tools/train.py` runs it alone.
_base_ = ['../mona_fasterrcnn_voc.py']
model = dict(backbone=dict(frozen_activations_dtype='bfloat16'))
