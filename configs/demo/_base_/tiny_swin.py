# What the CPU demos share: a 4-stage, 32-wide Swin (the Swin-T layout shrunk
# to train in minutes on a CPU), the same with Mona adapters, and a
# 300-iteration schedule (batch 4, warm-up 50, lr 1e-3, one checkpoint at
# the end, seed 0). Besides `custom_imports` and `randomness` these are
# variables that each demo picks by `_base_.<name>`: the stock runtime,
# schedule and model bases own the real keys.
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
# Fixed seed: the demos' metrics are reproducible from run to run.
randomness = dict(seed=0)

tiny_swin = dict(
    type='SwinTransformer',
    embed_dims=32,
    depths=[1, 1, 2, 1],
    num_heads=[1, 2, 4, 8],
    drop_path_rate=0.1,
    out_indices=(0, 1, 2, 3),
    convert_weights=False,
    init_cfg=None)
tiny_swin_widths = [32, 64, 128, 256]  # per stage: the neck's in_channels
# Mona's inner width: the paper's 64 is half Swin-B's embed_dims (128). 16 is
# half of 32, so each stage keeps the paper's bottleneck ratio (1/2, 1/4, 1/8,
# 1/16 of the stage width); 64 would be wider than the stage-1 tokens.
tiny_mona_swin = dict(
    tiny_swin,
    type='MonaSwinTransformer',
    adapter_cfg=dict(type='Mona', inner_dim=16, dropout=0.1))

max_iters = 300
iter_train_cfg = dict(
    _delete_=True,
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=max_iters)
warmup = dict(
    type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50)
# The detection demos: warm-up, then cosine decay to the last iteration.
detection_schedule = [
    warmup,
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters)
]
iter_default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval=max_iters))
