# MixedAE ViT-L/16, 1600 epochs, with FSDP (configs/_base_/fsdp_runtime.py):
# the same recipe, model and checkpoints as ../mixedae_vitl_1600e.py.
#   tools/dist_train.sh configs/fsdp/mixedae_vitl_1600e_fsdp.py 8
_base_ = ['../mixedae_vitl_1600e.py', '../_base_/fsdp_runtime.py']

# FSDP does the bf16 casting (strategy.model_wrapper.mixed_precision): no
# autocast and no loss scaler
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer={{_base_.optim_wrapper.optimizer}},
    paramwise_cfg={{_base_.optim_wrapper.paramwise_cfg}})
