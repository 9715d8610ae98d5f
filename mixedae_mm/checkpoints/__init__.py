"""Checkpoints: one atomic write, one weights-only read, strict loading into
a model, and the key maps, checks and conversions of the converters.

Needs only torch (no mmengine/mmpretrain), so ``tools/model_converters`` run
on a machine without OpenMMLab.
"""
from . import converters, finite, keymap
from .files import (OVERWRITE_FLAG, TRUST_TOOL, CheckpointError,
                    add_overwrite_flag, atomic_write, check_destination,
                    check_weights_only, checkpoint_format, exit_on_error,
                    load_weights_only, read_state_dict, remove_stale_temps,
                    state_dict_of, to_weights_only, trusted_load)
from .strict_loading import (CheckpointMismatchError, load_checkpoint_strict,
                             load_state_dict_strict)

__all__ = [
    'OVERWRITE_FLAG', 'TRUST_TOOL', 'CheckpointError',
    'CheckpointMismatchError', 'add_overwrite_flag', 'atomic_write',
    'check_destination', 'check_weights_only', 'checkpoint_format',
    'converters', 'exit_on_error', 'finite', 'keymap', 'load_checkpoint_strict',
    'load_state_dict_strict', 'load_weights_only', 'read_state_dict',
    'remove_stale_temps', 'state_dict_of', 'to_weights_only', 'trusted_load'
]
