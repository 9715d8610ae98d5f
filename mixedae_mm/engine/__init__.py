from .hooks import TrainingSummaryHook

__all__ = ['TrainingSummaryHook']
