# Study arm "MixedAE": the full method (mixing, homologous attention in every
# encoder layer, homologous contrastive loss) at study size.
_base_ = ['./_base_/fmnist_pretrain.py']
model = dict(
    type='MixedAE',
    segment_embed='decoder',
    ablation='none',
    backbone=dict(type='MixedAEViT', arch={{_base_.study_arch}},
                  img_size={{_base_.img_size}},
                  patch_size={{_base_.patch_size}}, mixing_ratio=0.25,
                  homo_attn_layers=None),
    neck=dict(type='MixedAEPretrainDecoder', in_chans=3, mlp_ratio=4.,
              decoder_embed_dim={{_base_.decoder_embed_dim}},
              decoder_depth={{_base_.decoder_depth}},
              decoder_num_heads={{_base_.decoder_num_heads}}),
    head=dict(type='MixedAEPretrainHead', norm_pix=True,
              loss=dict(type='PixelReconstructionLoss', criterion='L2'),
              homo_loss_weight=0.5, homo_temperature=0.25),
    data_preprocessor={{_base_.data_preprocessor}},
    init_cfg=[
        dict(type='Xavier', layer='Linear', distribution='uniform'),
        dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)
    ])
