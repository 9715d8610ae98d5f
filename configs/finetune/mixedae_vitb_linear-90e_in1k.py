# ImageNet-1K linear probing of a MixedAE ViT-B/16, 90 epochs, 8 GPUs x 2048.
# Frozen encoder, cls-token feature, BatchNorm without affine + linear
# classifier, LARS lr 6.4 @ 16384 (0.1 per 256), as MAE's protocol,
# inherited from mmpretrain's MAE benchmark config.
checkpoint = 'work_dirs/mixedae_vitb_1600e/epoch_1600.pth'  # MixedAE pretraining

_base_ = ('mmpretrain::mae/benchmarks/'
          'vit-base-p16_8xb2048-linear-coslr-90e_in1k.py')
custom_imports = dict(imports=['mixedae_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='MixedAEViT',
        arch='b',
        img_size=224,
        patch_size=16,
        mixing=False,
        frozen_stages=12,
        out_type='cls_token',
        final_norm=True,
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint, prefix='backbone.')))

# lr 6.4 is for 8 x 2048 images per step
auto_scale_lr = dict(base_batch_size=16384)

# Checkpoints that load with torch.load(weights_only=True) (resume,
# tools/test.py), written atomically; randomness seeded per step so that a
# resumed run equals an uninterrupted one.
custom_hooks = [
    dict(type='WeightsOnlyCheckpointHook'),
    dict(type='StepSeedHook'),
    # a NaN/inf loss or gradient stops the run before anything is saved
    dict(type='NonFiniteGuardHook'),
    # a resume takes lr and other hyper-parameters from this config
    dict(type='ConfigScheduleHook'),
]
default_hooks = dict(
    checkpoint=dict(backend_args=dict(backend='atomic_local')))
