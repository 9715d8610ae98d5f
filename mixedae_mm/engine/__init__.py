from .checkpoint import StepSeedHook, WeightsOnlyCheckpointHook
from .fileio import AtomicLocalBackend
from .hooks import TrainingSummaryHook
from .optim import ViTLayerDecayOptimWrapperConstructor

__all__ = [
    'AtomicLocalBackend', 'StepSeedHook', 'TrainingSummaryHook',
    'ViTLayerDecayOptimWrapperConstructor', 'WeightsOnlyCheckpointHook'
]
