# MixedAE ViT-B/16: MAE's encoder/decoder sizes, mixing ratio 1/4,
# homologous attention in every encoder layer, contrastive weight 0.5.
model = dict(
    type='MixedAE',
    segment_embed='decoder',  # (choice) 'decoder' | 'encoder' | 'none'
    # 'mae' | 'naive_mixing' | 'homo_attn_only': a preset replaces the
    # defaults stated below (a different value next to it is an error)
    ablation='none',
    backbone=dict(
        type='MixedAEViT',
        arch='b',
        img_size=224,
        patch_size=16,
        mixing_ratio=0.25,
        homo_attn_layers=None,  # None = all layers
    ),
    # num_patches, embed_dim, patch_size and group_size come from the backbone
    neck=dict(
        type='MixedAEPretrainDecoder',
        in_chans=3,
        decoder_embed_dim=512,
        decoder_depth=8,
        decoder_num_heads=16,
        mlp_ratio=4.,
    ),
    head=dict(
        type='MixedAEPretrainHead',
        norm_pix=True,
        loss=dict(type='PixelReconstructionLoss', criterion='L2'),
        homo_loss_weight=0.5,  # (choice) lambda
        homo_temperature=0.25,  # (choice) tau
    ),
    init_cfg=[
        dict(type='Xavier', layer='Linear', distribution='uniform'),
        dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)
    ])
