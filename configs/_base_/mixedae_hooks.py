# Hooks of every mixedae_mm recipe, pretraining and transfer (registered in
# mmpretrain by `import mixedae_mm`, in mmseg / mmdet by
# mixedae_mm.downstream.register_in). A recipe lists this file in `_base_`;
# none of the mmpretrain / mmseg / mmdet bases it inherits sets custom_hooks.
# (Checkpoints are made weights-only loadable by the recipes'
# default_hooks.checkpoint, DurableCheckpointHook.)
custom_hooks = [
    # first, so `custom_hooks.0.on_nonfinite=skip` addresses it in every
    # config: a NaN/inf loss or gradient stops the run before anything is
    # saved (or, with skip, the step is not taken)
    dict(type='NonFiniteGuardHook'),
    # randomness seeded per (seed, rank, iteration): a resumed run equals an
    # uninterrupted one
    dict(type='StepSeedHook'),
    # a resume takes lr and other hyper-parameters from this config
    dict(type='ConfigScheduleHook'),
    # TF32 for the fp32 matmuls and convolutions left outside bf16 autocast
    dict(type='TF32Hook'),
    # prints the real total batch and lr, warns when they differ from the
    # recipe's
    dict(type='BatchLRReportHook'),
    # SIGTERM / SIGUSR1 / Ctrl-C (Slurm, Kubernetes, torchrun): finish the
    # iteration, save a checkpoint, exit 128 + signal; --resume continues
    dict(type='PreemptionHook'),
]
