# Shared by every arm of the small-scale study (docs/results.md): data,
# schedule, hooks. Fashion-MNIST's 60,000 training images, grey 28x28 ->
# 3-channel 32x32, patch 4: N = 64 patches, G = 4 images a mix, K = 16.
# The arm's config adds the model.
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mixedae_mm'], allow_failed_imports=False)

# Debian's dataset-fashion-mnist puts the four IDX files (.gz) here; any
# folder holding them works: --cfg-options data_root=DIR (or the study
# tool's --data-root)
data_root = '/usr/share/datasets/fashion-mnist'
img_size = 32
patch_size = 4
# the encoder every arm shares: 8 layers of width 128 (see docs/results.md,
# "Choosing the size")
study_arch = dict(
    embed_dims=128, num_layers=8, num_heads=4, feedforward_channels=512)
decoder_embed_dim, decoder_depth, decoder_num_heads = 96, 2, 3
# Fashion-MNIST's pixel mean and std (0.286, 0.353) x 255, in every channel
data_preprocessor = dict(
    type='SelfSupDataPreprocessor',
    mean=[72.94, 72.94, 72.94],
    std=[90.02, 90.02, 90.02],
    to_rgb=False)

train_pipeline = [
    dict(type='GreyToRGB'),
    dict(type='RandomResizedCrop', scale=img_size,
         crop_ratio_range=(0.35, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
# what evaluation and the inferencers run on an image
test_pipeline = [
    dict(type='GreyToRGB'),
    dict(type='Resize', scale=(img_size, img_size), backend='pillow',
         interpolation='bicubic'),
    dict(type='PackInputs'),
]
batch_size = 128
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=1,
    persistent_workers=True,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='FashionMNISTFiles', data_root=data_root,
                 test_mode=False, pipeline=train_pipeline))

# AdamW as MAE; lr for batch 128 (see docs/results.md, "Choosing the size")
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.95),
                   weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'ln': dict(decay_mult=0.0),
            'bias': dict(decay_mult=0.0),
            'pos_embed': dict(decay_mult=0.),
            'mask_token': dict(decay_mult=0.),
            'cls_token': dict(decay_mult=0.),
            'segment_embed': dict(decay_mult=0.),
        }))
iters_per_epoch = 60000 // batch_size  # 468
max_epochs = 6
max_iters = max_epochs * iters_per_epoch
warmup_iters = iters_per_epoch // 2
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
         end=warmup_iters),
    dict(type='CosineAnnealingLR', T_max=max_iters - warmup_iters,
         by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25),
    checkpoint=dict(type='DurableCheckpointHook', by_epoch=False,
                    interval=iters_per_epoch, max_keep_ckpts=1))
# weighted kNN (k=20, T=0.07, cls token) of the first 10,000 training
# images against the first 2,000 test images, every epoch: knn_top1 in
# scalars.json, TensorBoard and the log
online_knn = dict(
    type='OnlineKNNHook', interval=iters_per_epoch,
    train_dataset=dict(type='FashionMNISTFiles', data_root=data_root,
                       test_mode=False),
    val_dataset=dict(type='FashionMNISTFiles', data_root=data_root,
                     test_mode=True),
    num_train=10000, num_val=2000, k=20, temperature=0.07, feature='cls',
    batch_size=500)
custom_hooks = [
    dict(type='NonFiniteGuardHook'),
    dict(type='StepSeedHook'),
    dict(type='ConfigScheduleHook'),
    online_knn,
    # reconstructions of 4 training images, every epoch (MixedAE models)
    dict(type='ReconstructionVisualizationHook', interval=iters_per_epoch,
         num_images=4),
    # SIGTERM / Ctrl-C: finish the iteration, save it, exit; the study
    # continues the run from there
    dict(type='PreemptionHook'),
]
visualizer = dict(
    type='UniversalVisualizer',
    vis_backends=[dict(type='LocalVisBackend'),
                  dict(type='TensorboardVisBackend')])
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
log_processor = dict(by_epoch=False)
