# MiMi (Marouf et al., WACV 2024) with the official round structure: Faster
# R-CNN, Swin-B (ImageNet-22k), Pascal VOC 07+12: the full fine-tuning
# baseline with the MiMi method base, trained for 3 rounds of the baseline's
# whole 4-epoch schedule.
_base_ = ['../baselines/fasterrcnn_swinb_voc.py', '../_base_/methods/mimi.py']
model = dict(backbone=_base_.peft_backbone)

# Schedule 'rounds' (IemProg/MiMi few_shot_prune.py): every round restarts the
# baseline's learning-rate schedule (500-iteration warm-up, step at epoch 3)
# and ends with a prune to floor(6016 * 0.5^k) neurons over all adapters:
# 3008, 1504, 752 (a tie at the threshold keeps all its neurons), so the run
# ends at the compression of fasterrcnn_swinb_voc.py (32), at 3x its cost.
# As in the official loop no training follows the last prune: the last
# validation sees the pruned model. (The official run starts wider, hidden =
# C, i.e. sigma0 = 1, and prunes 4 rounds: compression 16.)
rounds = 3
train_cfg = dict(max_epochs=rounds * _base_.max_epochs)
custom_hooks = [
    *_base_.custom_hooks,
    dict(
        type='MiMiPruneHook',
        schedule='rounds',
        rho=_base_.rho,
        rounds=rounds,
        round_epochs=_base_.max_epochs)
]
