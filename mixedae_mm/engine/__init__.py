from .checkpoint import WeightsOnlyCheckpointHook
from .checkpoint_hook import (CheckpointSaveError, DurableCheckpointHook,
                              warn_if_checkpoints_not_loadable)
from .fileio import AtomicLocalBackend
from .fsdp import MixedAEFSDPStrategy
from .knn_hook import OnlineKNNHook
from .nonfinite import NonFiniteGuardHook, NonFiniteTrainingError
from .optim import ViTLayerDecayOptimWrapperConstructor
from .precision import TF32Hook
from .preemption import PreemptionHook, TrainingPreempted
from .runner import MixedAERunner
from .schedule import BatchLRReportHook, ConfigScheduleHook
from .seeding import StepSeedHook
from .summary import TrainingSummaryHook
from .visualization_hook import ReconstructionVisualizationHook

__all__ = [
    'AtomicLocalBackend', 'BatchLRReportHook', 'CheckpointSaveError',
    'ConfigScheduleHook',
    'DurableCheckpointHook', 'MixedAEFSDPStrategy', 'MixedAERunner',
    'NonFiniteGuardHook', 'NonFiniteTrainingError', 'OnlineKNNHook',
    'PreemptionHook',
    'ReconstructionVisualizationHook',
    'StepSeedHook', 'TF32Hook', 'TrainingPreempted', 'TrainingSummaryHook',
    'ViTLayerDecayOptimWrapperConstructor', 'WeightsOnlyCheckpointHook',
    'warn_if_checkpoints_not_loadable'
]
