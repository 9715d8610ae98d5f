"""Loading a checkpoint into a model, verified by name and shape.

:func:`load_checkpoint_strict` (and :func:`load_state_dict_strict` for a
checkpoint already read) refuse a checkpoint whose tensors do not fit the
model, instead of the silent partial load of ``load_state_dict(strict=False)``
and mmengine's ``load_checkpoint``; keys left out on purpose are named by the
caller and reported.
"""
import re
from collections import OrderedDict
from typing import Dict, List, Sequence

import torch

from .files import CheckpointError, load_weights_only, state_dict_of

__all__ = [
    'CheckpointMismatchError', 'load_state_dict_strict',
    'load_checkpoint_strict'
]


class CheckpointMismatchError(CheckpointError, RuntimeError):
    """A readable checkpoint whose tensors do not fit the model (names
    missing or left over, shapes that differ). Also a ``RuntimeError``, as
    torch's ``load_state_dict`` raises."""


#: the keys in ``load_state_dict``'s error (torch's wording since 1.0)
_TORCH_SIZE_MISMATCH = re.compile(
    r'size mismatch for (\S+): copying a param with shape')
#: how many names of each kind a mismatch message shows
_SHOWN_KEYS = 4


def _some(items: Sequence[str]) -> str:
    """``[a, b, c, d, ... (N in all)]``: long lists keep the error one
    line."""
    items = list(items)
    shown = ', '.join(items[:_SHOWN_KEYS])
    more = f', ... ({len(items)} in all)' if len(items) > _SHOWN_KEYS else ''
    return f'[{shown}{more}]'


def _shape(tensor) -> tuple:
    return tuple(getattr(tensor, 'shape', ()))


def _not_matching(keys, patterns: Sequence[str]) -> List[str]:
    return [k for k in keys if not any(re.fullmatch(p, k) for p in patterns)]


def _by_module(keys: Sequence[str]) -> str:
    """``neck.* (3), head.* (2)``: skipped keys counted by top-level
    module."""
    counts: Dict[str, int] = {}
    for key in keys:
        top = key.split('.', 1)[0] + ('.*' if '.' in key else '')
        counts[top] = counts.get(top, 0) + 1
    return ', '.join(f'{top} ({n})' for top, n in sorted(counts.items()))


def load_state_dict_strict(model: torch.nn.Module,
                           checkpoint,
                           *,
                           source: str,
                           prefix: str = '',
                           expect_missing: Sequence[str] = (),
                           expect_unused: Sequence[str] = (),
                           logger=None) -> dict:
    """Load a checkpoint already read into ``model``, verified.

    Every tensor of the model must come from the checkpoint with the same
    name and shape (after the model's own load hooks, e.g. the position
    embedding resize of mmpretrain's ViT), and every checkpoint tensor under
    ``prefix`` must be used, except the keys matched by ``expect_missing`` /
    ``expect_unused``. Checkpoint keys outside ``prefix`` are skipped by
    design (e.g. ``neck.*``/``head.*`` of a pretraining checkpoint loaded
    with ``prefix='backbone.'``).

    Args:
        model: the module to load into.
        checkpoint: what ``torch.load`` returned (see :func:`state_dict_of`).
        source: the checkpoint's name for messages (its path).
        prefix: only checkpoint keys starting with it are loaded, with it
            removed.
        expect_missing: regular expressions (``re.fullmatch``) of model keys
            the checkpoint may lack (they keep their initial values).
        expect_unused: regular expressions of checkpoint keys (after
            ``prefix`` removal) the model may leave unused, e.g.
            ``(r'neck\\..*', r'head\\..*')``.
        logger: an object with ``info(str)`` told what was loaded and
            skipped; ``None``: nothing is printed.

    Returns:
        ``dict(loaded=[...], new=[...], unused=[...], outside_prefix=[...])``
        key lists: loaded; model keys left at their initial values; keys
        under ``prefix`` not used; keys skipped for not starting with
        ``prefix``.

    Raises:
        CheckpointMismatchError: names or shapes do not match (the model
            may then hold some of the checkpoint's tensors: discard it).
    """
    state = state_dict_of(checkpoint, source)
    outside = [k for k in state if not k.startswith(prefix)]
    if prefix:
        state = OrderedDict((k[len(prefix):], v) for k, v in state.items()
                            if k.startswith(prefix))
        if not state:
            raise CheckpointMismatchError(
                f'no parameter of {source} starts with {prefix!r}: for a '
                "full pretraining checkpoint use prefix='backbone.', for an "
                "extracted backbone prefix=''")
    where = f'{source} (prefix {prefix!r})' if prefix else source
    advice = ('Check arch/patch_size and the prefix.' if prefix else
              'Check that the config builds the model the checkpoint was '
              'saved from (arch, patch_size, img_size; a pretraining '
              'checkpoint goes with its pretraining config).')
    own = model.state_dict()
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
        shape_errors = []
    except RuntimeError as err:
        # torch raises for shapes even with strict=False, after the
        # model's load hooks had their chance (mmpretrain's ViT resizes a
        # position embedding): the keys it names are the ones that differ
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        differ = set(_TORCH_SIZE_MISMATCH.findall(str(err))) or {
            k for k, v in state.items()
            if k in own and _shape(v) != _shape(own[k])}
        shape_errors = [
            f'{k!r}: checkpoint {_shape(v)}, model {_shape(own[k])}'
            for k, v in state.items() if k in differ and k in own]
        if not shape_errors:
            detail = str(err).strip().splitlines()
            raise CheckpointMismatchError(
                f'{where} does not load into {type(model).__name__}: '
                f'{detail[-1].strip() if detail else err}. {advice}'
            ) from None
    bad_missing = [repr(k) for k in _not_matching(missing, expect_missing)]
    bad_unexpected = [
        repr(k) for k in _not_matching(unexpected, expect_unused)]
    if bad_missing or bad_unexpected or shape_errors:
        shapes = f', shapes differ {_some(shape_errors)}' \
            if shape_errors else ''
        raise CheckpointMismatchError(
            f'{where} does not match {type(model).__name__}: missing '
            f'{_some(bad_missing)}, unexpected {_some(bad_unexpected)}'
            f'{shapes}. {advice}')
    unexpected_set = set(unexpected)
    loaded = [k for k in state if k not in unexpected_set]
    report = dict(loaded=loaded, new=sorted(missing),
                  unused=sorted(unexpected), outside_prefix=outside)
    if logger is not None:
        skipped = f'; outside the prefix, skipped: {_by_module(outside)}' \
            if outside else ''
        logger.info(
            f'{type(model).__name__}: loaded {len(loaded)} tensors from '
            f'{where}; new (expected): {report["new"]}; unused (expected): '
            f'{report["unused"]}{skipped}')
    return report


def load_checkpoint_strict(model: torch.nn.Module,
                           path: str,
                           *,
                           prefix: str = '',
                           expect_missing: Sequence[str] = (),
                           expect_unused: Sequence[str] = (),
                           logger=None) -> dict:
    """Read ``path`` with :func:`load_weights_only` and load it into
    ``model`` through :func:`load_state_dict_strict` (same arguments and
    result)."""
    return load_state_dict_strict(
        model, load_weights_only(path), source=str(path), prefix=prefix,
        expect_missing=expect_missing, expect_unused=expect_unused,
        logger=logger)
