# FSDP (fully sharded data parallel) through mmengine's FlexibleRunner, on
# top of a pretraining recipe (configs/fsdp/*.py; docs/scale.md, "FSDP").
# Parameters, gradients and optimizer state are split over the GPUs; each
# transformer layer is an FSDP unit, gathered only while it runs.
runner_type = 'FlexibleRunner'
strategy = dict(
    type='MixedAEFSDPStrategy',  # mmengine's FSDPStrategy, resume repaired
    model_wrapper=dict(
        auto_wrap_policy=dict(
            type='mixedae_mm.engine.fsdp.encoder_layer_wrap_policy'),
        # FSDP casts the gathered weights itself: bf16 compute, gradients
        # averaged in fp32, fp32 master weights and AdamW state (the recipe's
        # AmpOptimWrapper becomes a plain OptimWrapper in configs/fsdp/).
        # tools/train.py runs it in fp32 on a machine without a GPU.
        mixed_precision=dict(
            param_dtype='bfloat16',
            reduce_dtype='float32',
            buffer_dtype='bfloat16')),
    # checkpoints hold the full, unsharded state (gathered on rank 0, on the
    # CPU): same layout as a run without FSDP, resumable with any number of
    # GPUs. 'local' (one shard per rank) is refused: its ShardedTensors do
    # not load weights-only, and no tool here rebuilds them (docs/scale.md).
    state_dict_cfg='full')
