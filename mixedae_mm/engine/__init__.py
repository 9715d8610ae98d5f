from .checkpoint import StepSeedHook, WeightsOnlyCheckpointHook
from .hooks import TrainingSummaryHook
from .optim import ViTLayerDecayOptimWrapperConstructor

__all__ = [
    'StepSeedHook', 'TrainingSummaryHook',
    'ViTLayerDecayOptimWrapperConstructor', 'WeightsOnlyCheckpointHook'
]
