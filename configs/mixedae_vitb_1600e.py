# MixedAE ViT-B/16, 1600 epochs on ImageNet-1K, 8 GPUs x 512 images.
# Targets (paper, arXiv 2303.17152): fine-tune top-1 83.9, ADE20K mIoU 48.7.
# Cost (estimate, docs/train.md): ~1,130 A100-hours (~140 h on 8 GPUs) at
# 502 images/s per A100, mmpretrain's measured MAE ViT-B rate (510) over
# MixedAE's step-time ratio to MAE measured on a CPU (1.016); 58.9 GFLOP per
# image per step (MAE: 58.8).
# Recipe: MAE's (AdamW 0.9/0.95, wd 0.05, base lr 1.5e-4 per 256 images,
# 40 warm-up epochs then cosine, RandomResizedCrop 0.2-1 + flip, norm_pix).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs512_mae.py',
    'mmpretrain::_base_/default_runtime.py',
    './_base_/models/mixedae_vit-base-p16.py',
    './_base_/mixedae_hooks.py',
]
custom_imports = dict(imports=['mixedae_mm'], allow_failed_imports=False)

# Groups of 4 consecutive images are mixed: a last, smaller batch could
# leave a remainder, so it is dropped. (collate_fn is restated because
# mmengine tags dicts inherited through 'mmpretrain::' with a _scope_ key
# that it then passes on to the collate function.)
# What mmpretrain's inferencers (FeatureExtractor, inference_model) run on
# an image: resize + centre crop to the encoder's 224. Normalisation is the
# model's data preprocessor. A test_pipeline, not a test_dataloader: there
# is no test loop in pretraining (mixedae_mm.apis.with_test_pipeline).
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    drop_last=True, collate_fn=dict(_delete_=True, type='default_collate'))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    dtype='bfloat16',
    optimizer=dict(
        type='AdamW', lr=1.5e-4 * 4096 / 256, betas=(0.9, 0.95),
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
        T_max=1560,
        eta_min=0.,
        by_epoch=True,
        begin=40,
        end=1600,
        convert_to_iter_based=True),
]

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1600)
default_hooks = dict(
    # checkpoints written atomically, old ones deleted only once the new one
    # is on disk, loadable with torch.load(weights_only=True)
    checkpoint=dict(
        type='DurableCheckpointHook', interval=1, max_keep_ckpts=3),
    logger=dict(type='LoggerHook', interval=100))
randomness = dict(seed=0, diff_rank_seed=True)
resume = True
# lr above is for 4096 images per step, scaled linearly to the real total
# batch (MAE: lr = 1.5e-4 x batch / 256)
auto_scale_lr = dict(enable=True, base_batch_size=4096)
