# MixedAE ViT-L/16, 1600 epochs on ImageNet-1K, 8 GPUs x 512 images.
# The ViT-B recipe with the ViT-L encoder (1024 wide, 24 blocks, 16 heads);
# decoder unchanged (512 x 8 blocks x 16 heads), as in MAE.
# Cost: 124.9 GFLOP per image per step (fwd+bwd, tools/analysis_tools/benchmark_vs_mae.py),
# 2.6e20 FLOP in all: about 570 A100-hours at an assumed 40% of bf16 peak
# (an estimate, not a measurement).
_base_ = './mixedae_vitb_1600e.py'

model = dict(backbone=dict(arch='l'))
