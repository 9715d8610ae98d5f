# ImageNet-1K linear probing of a MixedAE ViT-B/16, 90 epochs, 8 GPUs x 2048.
# Frozen encoder, cls-token feature, BatchNorm without affine + linear
# classifier, LARS lr 6.4 @ 16384 (0.1 per 256), as MAE's protocol,
# inherited from mmpretrain's MAE benchmark config.
checkpoint = 'work_dirs/mixedae_vitb_1600e/epoch_1600.pth'  # MixedAE pretraining

_base_ = [
    'mmpretrain::mae/benchmarks/vit-base-p16_8xb2048-linear-coslr-90e_in1k.py',
    '../_base_/mixedae_hooks.py',
]
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

# The base's AmpOptimWrapper would autocast to fp16; bf16 as every recipe
# (MAE's linear probe also runs its frozen encoder under autocast).
optim_wrapper = dict(type='AmpOptimWrapper', dtype='bfloat16')

# lr 6.4 is for 8 x 2048 images per step, scaled linearly to the real total
# batch (MAE: lr = 0.1 x batch / 256)
auto_scale_lr = dict(enable=True, base_batch_size=16384)

# checkpoints that load with torch.load(weights_only=True), written
# atomically, old ones deleted only after the new one is on disk
default_hooks = dict(checkpoint=dict(type='DurableCheckpointHook'))
