# ADE20K semantic segmentation with UperNet on a MixedAE ViT-L/16, 512x512,
# 160k iterations, 8 GPUs x 2 images: the ViT-B recipe this file inherits,
# with the ViT-L encoder.
# From mmseg's ViT-L UperNet (beit/beit-large_upernet_8xb1-amp-160k_ade20k-
# 640x640.py; mmseg ships no MAE ViT-L config): features from blocks
# 8/12/16/24 (out_indices 7, 11, 15, 23), Feature2Pyramid and heads 1024
# wide, drop path 0.2 (also MAE's ViT-L fine-tune value).
# Our choices (no published MAE ViT-L ADE20K config; the MAE paper searched
# the lr per entry): layer decay 0.75, MAE's ViT-L ImageNet rate, as the
# ViT-B recipe uses MAE's ViT-B rate 0.65; lr 1e-4, 512x512 crops, batch 16
# and schedule as ViT-B.
# Cost (estimate, docs/transfer.md): 2.49 TFLOP per 512x512 forward, 2.56M
# images: ~170 A100-hours at 10% of bf16 peak (no measured time found).
checkpoint = 'work_dirs/mixedae_vitl_1600e/epoch_1600.pth'  # MixedAE pretraining

_base_ = './mixedae_vitb_upernet-160k_ade20k-512.py'

model = dict(
    backbone=dict(
        arch='l',  # 1024 wide, 24 blocks, 16 heads
        drop_path_rate=0.2,
        out_indices=[7, 11, 15, 23],
        init_cfg=dict(checkpoint=checkpoint)),
    neck=dict(embed_dim=1024),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024], channels=1024),
    auxiliary_head=dict(in_channels=1024))

optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.75))
