# MixedAE ViT-B/16, 300 epochs on ImageNet-1K, 8 GPUs x 512 images.
# The 1600-epoch recipe with a shorter cosine schedule (40 warm-up epochs).
# Cost: 59.2 GFLOP per image per step (fwd+bwd, tools/analysis_tools/benchmark_vs_mae.py),
# 2.3e19 FLOP in all: about 51 A100-hours at an assumed 40% of bf16 peak
# (an estimate, not a measurement).
_base_ = './mixedae_vitb_1600e.py'

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-4,
        by_epoch=True,
        begin=0,
        end=40,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=260,
        eta_min=0.,
        by_epoch=True,
        begin=40,
        end=300,
        convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=300)
