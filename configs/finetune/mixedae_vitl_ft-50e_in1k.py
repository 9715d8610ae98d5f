# ImageNet-1K fine-tuning of a MixedAE ViT-L/16, 50 epochs, 8 GPUs x 128.
# The ViT-B recipe this file inherits with MAE's ViT-L values, as in
# mmpretrain's mae/benchmarks/vit-large-p16_8xb128-coslr-50e_in1k.py (MAE
# paper, Table 9): AdamW lr 4e-3 @ 1024 (1e-3 per 256), layer decay 0.75,
# drop path 0.2, 5 warm-up epochs then cosine to 1e-6 at epoch 50; augments,
# label smoothing, bf16 AMP and batch as ViT-B.
# Cost (estimate, docs/transfer.md): ~280 V100-hours, MAE's measured ViT-L
# fine-tuning time (~8 h 52 min on 32 V100s).
checkpoint = 'work_dirs/mixedae_vitl_1600e/epoch_1600.pth'  # MixedAE pretraining

_base_ = './mixedae_vitb_ft-100e_in1k.py'

model = dict(
    backbone=dict(
        arch='l',  # 1024 wide, 24 blocks, 16 heads
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint=checkpoint)),
    head=dict(in_channels=1024))

optim_wrapper = dict(
    optimizer=dict(lr=4e-3), paramwise_cfg=dict(layer_decay_rate=0.75))

max_epochs = 50
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-4,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - 5,
        by_epoch=True,
        begin=5,
        end=max_epochs,
        eta_min=1e-6,
        convert_to_iter_based=True)
]
train_cfg = dict(max_epochs=max_epochs)
