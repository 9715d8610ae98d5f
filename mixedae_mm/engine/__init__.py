from .checkpoint import StepSeedHook, WeightsOnlyCheckpointHook
from .hooks import TrainingSummaryHook

__all__ = ['StepSeedHook', 'TrainingSummaryHook', 'WeightsOnlyCheckpointHook']
