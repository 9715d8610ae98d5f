# MixedAE ViT-L/16, 1600 epochs on ImageNet-1K, 8 GPUs x 512 images.
# The ViT-B recipe with the ViT-L encoder (1024 wide, 24 blocks, 16 heads);
# decoder unchanged (512 x 8 blocks x 16 heads), as in MAE.
# GPU_HOURS_L
_base_ = './mixedae_vitb_1600e.py'

model = dict(backbone=dict(arch='l'))
