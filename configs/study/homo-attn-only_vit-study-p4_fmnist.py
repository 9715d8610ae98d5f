# Study arm: ablation='homo_attn_only' of our MixedAE; the same encoder,
# decoder, data and schedule as the full method.
_base_ = ['./mixedae_vit-study-p4_fmnist.py']
model = dict(ablation='homo_attn_only')
