# COCO Mask R-CNN on a MixedAE ViT-L/16 + SimpleFPN, 100 epochs of LSJ at
# 1024, 16 GPUs x 4 images: the ViT-B recipe this file inherits, with
# ViTDet's ViT-L values (detectron2 projects/ViTDet/configs/COCO/
# mask_rcnn_vitdet_l_100ep.py; mmdet's wheel ships no ViTDet config, so
# these are not checked against an installed file): 14x14 windows except
# blocks 6/12/18/24 (global_attn_indexes 5, 11, 17, 23), drop path 0.4,
# layer decay 0.8; lr 1e-4 @ 64, wd 0.1 and schedule as ViT-B.
# Reference for the MAE baseline: ViTDet model zoo, Mask R-CNN ViT-L, MAE
# IN-1K, 100 epochs: APbox 55.6, APmask 49.2.
# Cost (estimate, docs/transfer.md): ~1,960 A100-hours for 11.7M images at
# the 0.603 s per training image per A100 that the ViTDet model zoo lists
# for ViT-L (not measured here).
checkpoint = 'work_dirs/mixedae_vitl_1600e/epoch_1600.pth'  # MixedAE pretraining

_base_ = './mixedae_vitb_mask-rcnn_simplefpn-lsj-100e_coco.py'

model = dict(
    backbone=dict(
        arch='l',  # 1024 wide, 24 blocks, 16 heads
        drop_path_rate=0.4,
        global_attn_indexes=[5, 11, 17, 23],
        out_indices=(23, ),  # (B, 1024, H/16, W/16)
        init_cfg=dict(checkpoint=checkpoint)),
    neck=dict(in_channels=1024))

optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8))
