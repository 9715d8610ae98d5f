from .checkpoint import StepSeedHook, WeightsOnlyCheckpointHook
from .fileio import AtomicLocalBackend
from .hooks import BatchLRReportHook, TF32Hook, TrainingSummaryHook
from .optim import ViTLayerDecayOptimWrapperConstructor

__all__ = [
    'AtomicLocalBackend', 'BatchLRReportHook', 'StepSeedHook', 'TF32Hook',
    'TrainingSummaryHook',
    'ViTLayerDecayOptimWrapperConstructor', 'WeightsOnlyCheckpointHook'
]
