from .checkpoint import StepSeedHook, WeightsOnlyCheckpointHook
from .fileio import AtomicLocalBackend
from .hooks import TrainingSummaryHook
from .nonfinite import NonFiniteGuardHook, NonFiniteTrainingError
from .optim import ViTLayerDecayOptimWrapperConstructor
from .schedule import ConfigScheduleHook

__all__ = [
    'AtomicLocalBackend', 'ConfigScheduleHook', 'NonFiniteGuardHook',
    'NonFiniteTrainingError', 'StepSeedHook', 'TrainingSummaryHook',
    'ViTLayerDecayOptimWrapperConstructor', 'WeightsOnlyCheckpointHook'
]
