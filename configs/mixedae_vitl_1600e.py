# MixedAE ViT-L/16, 1600 epochs on ImageNet-1K, 8 GPUs x 512 images.
# The ViT-B recipe with the ViT-L encoder (1024 wide, 24 blocks, 16 heads);
# decoder unchanged (512 x 8 blocks x 16 heads), as in MAE.
# Cost (estimate, docs/train.md): ~5,500 V100-hours, from MAE's measured
# ViT-L time (800 epochs in ~42 h on 64 V100s) x 2 x 1.016 (MixedAE's
# step-time ratio to MAE, measured on a CPU); 124.9 GFLOP per image per step.
_base_ = './mixedae_vitb_1600e.py'

model = dict(backbone=dict(arch='l'))
