# Study arm: ablation='naive_mixing' of our MixedAE; the same encoder,
# decoder, data and schedule as the full method.
_base_ = ['./mixedae_vit-study-p4_fmnist.py']
model = dict(ablation='naive_mixing')
