"""Checkpoints that load without unpickling code, and resumes that are exact.

torch >= 2.6 loads with ``weights_only=True``: only tensors, Python
primitives and containers are rebuilt, so a checkpoint from elsewhere cannot
run code. mmengine's own checkpoints do not pass that: the message hub holds
``HistoryBuffer`` objects with numpy arrays, and allow-listing numpy's
pickles would also admit ``builtins.getattr``. :class:`WeightsOnlyCheckpointHook`
writes the message hub as tensors and rebuilds the objects after loading, so
resuming needs no allow-list at all.
"""
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmpretrain.registry import HOOKS

from ..checkpoints.files import BUFFER_TAG, to_weights_only


def dict_to_history_buffer(state: dict) -> HistoryBuffer:
    buffer = HistoryBuffer(max_length=state['max_length'])
    buffer._log_history = state['log_history'].numpy()
    buffer._count_history = state['count_history'].numpy()
    return buffer


def from_weights_only(value):
    """Inverse of :func:`to_weights_only` for the tagged HistoryBuffers."""
    if isinstance(value, dict):
        if value.get(BUFFER_TAG):
            return dict_to_history_buffer(value)
        return type(value)(
            (k, from_weights_only(v)) for k, v in value.items())
    return value


def checkpoint_to_weights_only(checkpoint: dict) -> None:
    """Convert, in place, the parts of an mmengine checkpoint that hold
    objects (message hub, meta)."""
    for key in ('message_hub', 'meta'):
        if key in checkpoint:
            checkpoint[key] = to_weights_only(checkpoint[key])


def checkpoint_from_weights_only(checkpoint: dict) -> None:
    if 'message_hub' in checkpoint:
        checkpoint['message_hub'] = from_weights_only(
            checkpoint['message_hub'])


@HOOKS.register_module()
class WeightsOnlyCheckpointHook(Hook):
    """Save checkpoints that ``torch.load(weights_only=True)`` accepts.

    Converts the message hub before saving and back after loading (mmengine
    calls ``after_load_checkpoint`` before it restores the message hub).
    ``DurableCheckpointHook`` does the same itself; this hook remains for
    configs that keep mmengine's ``CheckpointHook``. Both together are
    harmless (the conversions are idempotent).
    """
    priority = 'VERY_HIGH'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint_to_weights_only(checkpoint)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint_from_weights_only(checkpoint)
