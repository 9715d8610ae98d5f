# Study arm "mae-ours": ablation='mae' of our MixedAE (same encoder, decoder,
# data and schedule as the full method).
_base_ = ['./mixedae_vit-study-p4_fmnist.py']
model = dict(ablation='mae')
