from .checkpoint import StepSeedHook, WeightsOnlyCheckpointHook
from .checkpoint_hook import (DurableCheckpointHook,
                              warn_if_checkpoints_not_loadable)
from .fileio import AtomicLocalBackend
from .hooks import BatchLRReportHook, TF32Hook, TrainingSummaryHook
from .optim import ViTLayerDecayOptimWrapperConstructor

__all__ = [
    'AtomicLocalBackend', 'BatchLRReportHook', 'DurableCheckpointHook',
    'StepSeedHook', 'TF32Hook', 'TrainingSummaryHook',
    'ViTLayerDecayOptimWrapperConstructor', 'WeightsOnlyCheckpointHook',
    'warn_if_checkpoints_not_loadable'
]
