# COCO detection + instance segmentation: Mask R-CNN on a MixedAE ViT-B/16
# with ViTDet's simple feature pyramid, 100 epochs of large-scale jitter at
# 1024, 16 GPUs x 4 images (batch 64; 32 x 2 works the same).
# Targets: MixedAE paper (arXiv 2303.17152): COCO AP MAE + 0.9, APmask 43.5.
# Reference for the MAE baseline of this exact recipe: detectron2's ViTDet
# model zoo (Li et al., arXiv 2203.16527), Mask R-CNN ViT-B, MAE IN-1K,
# 100 epochs: APbox 51.6, APmask 45.9. Compare MixedAE against MAE fine-tuned
# with the same config, not against numbers from another protocol.
# Cost (estimate, docs/transfer.md): ~1,020 A100-hours for 11.7M images at
# the 0.314 s per training image per A100 that the ViTDet model zoo lists
# for ViT-B (not measured here).
# Recipe (ViTDet): ViT-B with 14x14 windowed attention except in blocks 2, 5,
# 8, 11 (global), relative position biases, drop path 0.1, no cls token;
# SimpleFPN (strides 4-32 from the stride-16 map, + P6) with LayerNorm;
# 2-conv RPN head (no norm, as ViTDet); 4conv1fc box head and mask head with
# LayerNorm; AdamW lr 1e-4 @ 64, betas (0.9, 0.999), wd 0.1, layer decay 0.7;
# 250-iteration linear warm-up, lr x0.1 at epochs 88 and 96; AMP.
# Schedule in epochs, as mmdet's common LSJ config: 25 epochs of the training
# set repeated 4 times = 100 COCO epochs (about 183k iterations at 64 images;
# ViTDet: 184,375, decays at 163,889 / 177,546 = epochs 88 / 96).
checkpoint = 'work_dirs/mixedae_vitb_1600e/epoch_1600.pth'  # MixedAE pretraining

_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::common/lsj-100e_coco-instance.py',
    '../_base_/mixedae_hooks.py',
]
custom_imports = dict(
    imports=['mixedae_mm.downstream.mmdet'], allow_failed_imports=False)

image_size = (1024, 1024)
# ViTDet's LayerNorm over channels (registered by mixedae_mm.downstream)
norm_cfg = dict(type='LN2d', eps=1e-6, requires_grad=True)

model = dict(
    # Every image (<= 1024 a side after the pipeline) is padded to 1024 x
    # 1024 after normalisation, with zeros (the mean colour), masks too: the
    # ViT always sees the 64 x 64 grid its position embeddings have, as
    # ViTDet's square padding. Padding here rather than in the pipeline
    # keeps img_shape the real image size, so test boxes and masks are
    # clipped to the image, not to the padded canvas.
    data_preprocessor=dict(pad_size_divisor=1024, pad_mask=True),
    backbone=dict(
        _delete_=True,
        type='MixedAEViT',
        arch='b',
        img_size=1024,  # position embeddings resized from 14x14 at loading
        patch_size=16,
        mixing=False,
        fix_pos_embed=False,
        drop_path_rate=0.1,
        window_size=14,
        global_attn_indexes=[2, 5, 8, 11],
        use_rel_pos_bias=True,
        out_type='featmap',  # (B, 768, H/16, W/16)
        out_indices=(11, ),
        final_norm=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(
        _delete_=True,
        type='SimpleFPN',
        in_channels=768,
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),  # strides 4, 8, 16, 32 (+ 64)
        num_outs=5,
        norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

# Large-scale jitter: resize to 0.1-2.0 x 1024, crop 1024 (objects may all
# fall outside); padding to 1024 x 1024 happens in the data preprocessor.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='RandomResize',
        scale=image_size,
        ratio_range=(0.1, 2.0),
        keep_ratio=True),
    dict(
        type='RandomCrop',
        crop_type='absolute_range',
        crop_size=image_size,
        recompute_bbox=True,
        allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=8,
    dataset=dict(dataset=dict(pipeline=train_pipeline)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    dtype='bfloat16',  # without it AmpOptimWrapper autocasts to fp16
    constructor='ViTLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.7),
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1))

max_epochs = 25  # x RepeatDataset(times=4) = 100 COCO epochs
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=250),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[22, 24],  # COCO epochs 88 and 96
        gamma=0.1)
]
train_cfg = dict(max_epochs=max_epochs, val_interval=5)

# lr 1e-4 is for 16 x 4 = 64 images per step, scaled linearly to the real
# total batch (our choice: ViTDet fixes the batch at 64 and does not scale),
# so that e.g. 8 GPUs x 4 train with lr 5e-5
auto_scale_lr = dict(enable=True, base_batch_size=64)

# checkpoints that load with torch.load(weights_only=True), written
# atomically, old ones deleted only after the new one is on disk
default_hooks = dict(checkpoint=dict(type='DurableCheckpointHook'))
