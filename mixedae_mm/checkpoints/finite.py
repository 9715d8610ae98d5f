"""The converters' check that the weights they write are finite.

A diverged run leaves checkpoints full of NaN that load, extract and publish
without complaint; the converters refuse them unless told otherwise. Needs
torch only, like the rest of ``mixedae_mm.checkpoints``.
"""
from typing import Dict, List

import torch

from .files import CheckpointError

ALLOW_FLAG = '--allow-nonfinite'


class NonFiniteWeightsError(CheckpointError):
    """Weights holding NaN/inf, refused (:func:`check`)."""


def nonfinite_keys(state: Dict[str, torch.Tensor]) -> List[str]:
    """Keys of the floating-point tensors holding a NaN or inf, sorted."""
    return sorted(k for k, v in state.items() if v.is_floating_point()
                  and not bool(torch.isfinite(v).all()))


def add_flag(parser) -> None:
    parser.add_argument(
        ALLOW_FLAG, action='store_true',
        help='write the weights even if some hold NaN/inf (by default such '
        'a checkpoint, from a diverged run, is refused)')


def refusal(state: Dict[str, torch.Tensor], src: str) -> str:
    """The error message for ``state`` read from ``src``, or '' if every
    tensor is finite."""
    bad = nonfinite_keys(state)
    if not bad:
        return ''
    shown = ', '.join(bad[:8]) + (f', ... ({len(bad)} in all)'
                                  if len(bad) > 8 else '')
    return (f'{src}: {len(bad)} of {len(state)} tensors hold NaN/inf values '
            f'({shown}); it comes from a diverged run. Use an earlier '
            f'checkpoint, or pass {ALLOW_FLAG} to write it anyway')


def check(state: Dict[str, torch.Tensor], src: str,
          allow_nonfinite: bool = False) -> None:
    """Raise :class:`NonFiniteWeightsError` with :func:`refusal`'s message
    if a tensor of ``state`` (read from ``src``) holds NaN/inf, unless
    ``allow_nonfinite`` (the converters' ``--allow-nonfinite``)."""
    message = refusal(state, src)
    if message and not allow_nonfinite:
        raise NonFiniteWeightsError(message)
