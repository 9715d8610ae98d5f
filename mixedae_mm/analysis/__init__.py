"""Measuring what a step costs: FLOPs (CPU attention included), time,
memory. The command lines over it are in ``tools/analysis_tools``.

``flop_counting`` needs only torch; ``step_cost`` builds models through
mmpretrain's registry. ``benchmark`` (MixedAE against MAE,
``benchmark_vs_mae.py``), ``gpu_hours`` (``estimate_gpu_hours.py``) and
``memory`` (``estimate_memory.py``) are imported by name; ``gpu_check``
(the GPU check, ``gpu_check.py``) needs only the standard library.
"""
from .flop_counting import CPU_ATTENTION, flop_counter
from .step_cost import Trainer, build_pair, checkpoint_forward

__all__ = [
    'CPU_ATTENTION', 'flop_counter', 'Trainer', 'build_pair',
    'checkpoint_forward'
]
