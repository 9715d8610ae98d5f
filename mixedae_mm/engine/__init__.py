from .checkpoint import StepSeedHook, WeightsOnlyCheckpointHook
from .checkpoint_hook import (DurableCheckpointHook,
                              warn_if_checkpoints_not_loadable)
from .fileio import AtomicLocalBackend
from .hooks import TrainingSummaryHook
from .optim import ViTLayerDecayOptimWrapperConstructor

__all__ = [
    'AtomicLocalBackend', 'DurableCheckpointHook', 'StepSeedHook',
    'TrainingSummaryHook', 'ViTLayerDecayOptimWrapperConstructor',
    'WeightsOnlyCheckpointHook', 'warn_if_checkpoints_not_loadable'
]
