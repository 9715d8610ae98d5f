# Dense study, segmentation: the shipped ADE20K UperNet recipe
# (configs/seg/mixedae_vitb_upernet-160k_ade20k-512.py) at the study
# encoder's size, on 64x64 scenes of Fashion-MNIST items (11 classes:
# background + 10). Kept from the recipe: UperNet + auxiliary FCN head on
# Feature2Pyramid over four encoder layers, relative position bias, drop
# path 0.1, AdamW with layer-wise lr decay (our constructor), strict
# loading of the encoder. Changed for the size (docs/results.md, "Dense
# transfer: choosing the sizes"): heads 64 channels wide, the pyramid at
# 32/16/8/4 instead of 4x/2x/1x/0.5x of the grid, lr and decay rate, a
# short schedule, whole-image inference.
_base_ = ['../seg/mixedae_vitb_upernet-160k_ade20k-512.py',
          './_base_/fmnist_scenes.py']
custom_imports = dict(
    imports=['mixedae_mm.downstream.mmseg'], allow_failed_imports=False)

crop_size = ({{_base_.img_size}}, {{_base_.img_size}})
model = dict(
    data_preprocessor=dict(mean={{_base_.mean}}, std={{_base_.std}},
                           size=crop_size),
    backbone=dict(
        # the classification study's encoder (configs/study/_base_/
        # fmnist_pretrain.py: study_arch)
        arch=dict(_delete_=True, embed_dims=128, num_layers=8, num_heads=4,
                  feedforward_channels=512),
        img_size={{_base_.img_size}},
        patch_size={{_base_.patch_size}},
        out_indices=[1, 3, 5, 7],  # 4 of 8 layers, as 4/6/8/12 of ViT-B's 12
        init_cfg=dict(checkpoint={{_base_.encoder_checkpoint}})),
    # the 16x16 grid resampled to 32, 16, 8 and 4 a side
    neck=dict(embed_dim=128, rescales=[2, 1, 0.5, 0.25]),
    decode_head=dict(in_channels=[128, 128, 128, 128], channels=64,
                     num_classes=11),
    # on the grid's own resolution (the recipe's 1x level)
    auxiliary_head=dict(in_index=1, in_channels=128, channels=64,
                        num_classes=11),
    test_cfg=dict(mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs'),
]
dataset = dict(type='FashionMNISTScenesDataset',
               data_root={{_base_.scenes_root}})
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        _delete_=True,
        data_prefix=dict(img_path='images/train', seg_map_path='seg_maps/train'),
        pipeline=train_pipeline,
        **dataset))
val_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        _delete_=True,
        data_prefix=dict(img_path='images/test', seg_map_path='seg_maps/test'),
        pipeline=test_pipeline,
        **dataset))
test_dataloader = val_dataloader
# IoUMetric that also returns each class's IoU (in the metrics a test run
# writes to <timestamp>.json)
val_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# lr for batch 16 and decay rate: those of the classification study's
# fine-tune (docs/results.md, "choosing the sizes")
optim_wrapper = dict(
    optimizer=dict(lr=1e-3),
    paramwise_cfg=dict(layer_decay_rate=0.75))
max_iters = 1000
# the recipe's shape: linear warm-up, then poly (power 1) to 0
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
         end=50),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=50, end=max_iters,
         by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(by_epoch=False, interval=250, max_keep_ckpts=1))
