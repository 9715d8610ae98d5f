# Study arm "MAE (mmpretrain)": mmpretrain's own MAE (MAEViT, 75% masking,
# MAEPretrainDecoder, MAEPretrainHead) at the study's sizes: the anchor users
# compare with. Same data, schedule and hooks as the other arms, less the
# reconstruction pictures (they need MixedAE.reconstruct).
_base_ = ['./_base_/fmnist_pretrain.py']
model = dict(
    type='MAE',
    backbone=dict(type='MAEViT', arch={{_base_.study_arch}},
                  img_size={{_base_.img_size}},
                  patch_size={{_base_.patch_size}}, mask_ratio=0.75),
    neck=dict(type='MAEPretrainDecoder', num_patches=64,
              patch_size={{_base_.patch_size}}, in_chans=3,
              embed_dim={{_base_.study_arch.embed_dims}},
              mlp_ratio=4., decoder_embed_dim={{_base_.decoder_embed_dim}},
              decoder_depth={{_base_.decoder_depth}},
              decoder_num_heads={{_base_.decoder_num_heads}}),
    head=dict(type='MAEPretrainHead', norm_pix=True,
              patch_size={{_base_.patch_size}},
              loss=dict(type='PixelReconstructionLoss', criterion='L2')),
    data_preprocessor={{_base_.data_preprocessor}},
    init_cfg=[
        dict(type='Xavier', layer='Linear', distribution='uniform'),
        dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)
    ])
custom_hooks = [
    dict(type='NonFiniteGuardHook'),
    dict(type='StepSeedHook'),
    dict(type='ConfigScheduleHook'),
    {{_base_.online_knn}},
    dict(type='PreemptionHook'),
]
