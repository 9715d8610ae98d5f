# Dense study, detection and instance segmentation: the shipped COCO Mask
# R-CNN recipe (configs/det/mixedae_vitb_mask-rcnn_simplefpn-lsj-1x_coco.py)
# at the study encoder's size, on 64x64 scenes of Fashion-MNIST items (10
# classes). Kept from the recipe: ViTDet's simple feature pyramid
# (SimpleFPN with LayerNorm), 2-conv RPN, 4conv1fc box head and mask head
# with LayerNorm, relative position bias, drop path 0.1, AdamW with
# layer-wise lr decay (our constructor), strict loading of the encoder.
# Changed for the size (docs/results.md, "Dense transfer: choosing the
# sizes"): global attention everywhere (a 16x16 grid needs no windows),
# 64-channel pyramid and heads, the pyramid at strides 2-32 (the grid is at
# stride 4, not 16), anchors 8-128 px, fewer proposals and sampled RoIs,
# lr and decay rate, a short schedule without jitter.
_base_ = ['../det/mixedae_vitb_mask-rcnn_simplefpn-lsj-1x_coco.py',
          './_base_/fmnist_scenes.py']
custom_imports = dict(
    imports=['mixedae_mm.downstream.mmdet'], allow_failed_imports=False)

norm_cfg = dict(type='LN2d', eps=1e-6, requires_grad=True)
model = dict(
    data_preprocessor=dict(mean={{_base_.mean}}, std={{_base_.std}},
                           pad_size_divisor={{_base_.img_size}}),
    backbone=dict(
        # the classification study's encoder (configs/study/_base_/
        # fmnist_pretrain.py: study_arch)
        arch=dict(_delete_=True, embed_dims=128, num_layers=8, num_heads=4,
                  feedforward_channels=512),
        img_size={{_base_.img_size}},
        patch_size={{_base_.patch_size}},
        window_size=0,
        global_attn_indexes=[],
        out_indices=(7, ),  # the last layer's (B, 128, 16, 16) map
        init_cfg=dict(checkpoint={{_base_.encoder_checkpoint}})),
    neck=dict(in_channels=128, out_channels=64,
              scale_factors=(2.0, 1.0, 0.5, 0.25),  # strides 2, 4, 8, 16
              num_outs=5),  # + 32
    rpn_head=dict(
        in_channels=64, feat_channels=64,
        anchor_generator=dict(scales=[4], strides=[2, 4, 8, 16, 32])),
    roi_head=dict(
        # RoIs under 28 px read the stride-2 level, 28-56 px the stride-4
        # one (with the recipe's finest_scale 56, every RoI of these scenes
        # would read the stride-2 level alone)
        bbox_roi_extractor=dict(out_channels=64, finest_scale=14,
                                featmap_strides=[2, 4, 8, 16]),
        bbox_head=dict(in_channels=64, conv_out_channels=64,
                       fc_out_channels=256, num_classes=10),
        mask_roi_extractor=dict(out_channels=64, finest_scale=14,
                                featmap_strides=[2, 4, 8, 16]),
        mask_head=dict(in_channels=64, conv_out_channels=64,
                       num_classes=10)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64), mask_size=28)),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=20)))

classes = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
           'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
dataset = dict(type='CocoDataset', data_root={{_base_.scenes_root}},
               metainfo=dict(classes=classes))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # every scene is already 64x64: this resize only records the scale
    # factor (1) that the heads' post-processing reads
    dict(type='Resize', scale=({{_base_.img_size}}, {{_base_.img_size}}),
         keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]
train_dataloader = dict(
    _delete_=True,
    batch_size=8,  # a Mask R-CNN step costs ~4x a UperNet one here
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='images/train/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=1),
                 pipeline=train_pipeline, **dataset))
val_dataloader = dict(
    _delete_=True,
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(ann_file='annotations/instances_test.json',
                 data_prefix=dict(img='images/test/'), test_mode=True,
                 pipeline=test_pipeline, **dataset))
test_dataloader = val_dataloader
val_evaluator = dict(
    _delete_=True,
    type='CocoMetric',
    ann_file={{_base_.scenes_test_annotations}},
    metric=['bbox', 'segm'],
    format_only=False)
test_evaluator = val_evaluator

# decay rate: the classification study's fine-tune's; lr 5e-4 for batch 8
# (its 1e-3 at batch 16, scaled linearly)
optim_wrapper = dict(
    optimizer=dict(lr=5e-4),
    paramwise_cfg=dict(layer_decay_rate=0.75))
auto_scale_lr = dict(enable=True, base_batch_size=8)
max_iters = 600
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
         end=50),
    # the recipe's steps at 8/12 and 11/12 of the schedule
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[400, 550], gamma=0.1),
]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop',
                 max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(by_epoch=False, interval=200, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
