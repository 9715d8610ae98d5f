"""Checkpoint files: written complete or not at all, read without code.

Needs only torch and the standard library (no mmengine/mmpretrain), so the
converter CLIs in ``tools/model_converters`` load this file by path and the
training hooks import it: one implementation for both.

Writing: the bytes go to a hidden temporary file ``.<name>.<random>.tmp`` in
the target's folder, are flushed to disk, get the mode a plain ``open``
would give (``0o666 & ~umask``; ``mkstemp`` makes 0o600), and are renamed
over the target (``os.replace`` is atomic); the folder is then fsynced so
that the rename itself survives a power cut. A killed writer leaves only a
temporary file, which :func:`remove_stale_temps` deletes.

Reading: :func:`load_weights_only` always passes ``weights_only=True``, so
no environment variable (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``) can make a
checkpoint run code, and turns torch's errors into one line naming the file
and what to do.

Loading into a model: :func:`load_checkpoint_strict` (and
:func:`load_state_dict_strict` for a checkpoint already read) refuse a
checkpoint whose tensors do not fit the model by name and shape, instead of
the silent partial load of ``load_state_dict(strict=False)`` and mmengine's
``load_checkpoint``; keys left out on purpose are named by the caller and
reported.
"""
import glob
import io
import os
import os.path as osp
import pickle
import re
import sys
import tempfile
from collections import OrderedDict
from typing import BinaryIO, Callable, Dict, List, Optional, Sequence

import torch

__all__ = [
    'CheckpointError', 'TRUST_TOOL', 'atomic_write', 'write_bytes_atomic',
    'remove_stale_temps', 'load_weights_only', 'to_weights_only',
    'CheckpointMismatchError', 'load_checkpoint_strict',
    'load_state_dict_strict'
]

#: the command that turns a trusted pickled checkpoint into a loadable one
TRUST_TOOL = 'python tools/model_converters/trust_checkpoint.py'
#: ``.<target name>.<8 random chars of mkstemp>.tmp``
_TEMP_NAME = re.compile(r'\..+\.[a-z0-9_]{8}\.tmp')


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (missing, truncated, corrupt, or
    holding pickled objects ``weights_only`` refuses)."""


class CheckpointMismatchError(CheckpointError, RuntimeError):
    """A readable checkpoint whose tensors do not fit the model (names
    missing or left over, shapes that differ). Also a ``RuntimeError``, as
    torch's ``load_state_dict`` raises."""


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask is process-wide)
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be
    opened, e.g. Windows)."""
    if not hasattr(os, 'O_DIRECTORY'):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str,
                 write: Callable[[BinaryIO], None],
                 final_path: Optional[Callable[[str], str]] = None) -> str:
    """Create ``path`` complete or not at all.

    Args:
        write: writes the content to the binary file it is given.
        final_path: given the finished temporary file, returns the name to
            give it (e.g. one with the content hash); default ``path``.

    Returns:
        The final path.
    """
    path = str(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=folder, prefix=f'.{osp.basename(path)}.', suffix='.tmp')
    try:
        if hasattr(os, 'fchmod'):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        final = final_path(tmp) if final_path else path
        os.replace(tmp, final)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(osp.dirname(osp.abspath(final)))
    return final


def write_bytes_atomic(data: bytes, path: str) -> str:
    return atomic_write(path, lambda f: f.write(data))


def remove_stale_temps(folder: str) -> List[str]:
    """Delete the temporary files that killed :func:`atomic_write` calls left
    in ``folder`` (each as large as what it was writing); returns them.

    Call it only where no other process is writing into ``folder``.
    """
    if not osp.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        path = osp.join(folder, name)
        if _TEMP_NAME.fullmatch(name) and osp.isfile(path) \
                and not osp.islink(path):
            os.remove(path)
            removed.append(path)
    return removed


def _trust_advice(path: str) -> str:
    stem, ext = osp.splitext(path)
    return (f'If you trust where it comes from, convert it once: '
            f'{TRUST_TOOL} {path} {stem}_weights_only{ext or ".pth"} '
            '--trust')


def _starts_like_torch_save(path: str) -> bool:
    """Whether the file begins as torch.save's output does: a zip archive
    (``PK``) or, in the legacy format, a pickle protocol opcode."""
    with open(path, 'rb') as f:
        head = f.read(2)
    return head == b'PK' or head[:1] == b'\x80'


def load_weights_only(path: str, map_location='cpu'):
    """``torch.load(path, weights_only=True)`` with one-line errors that name
    the file: :class:`CheckpointError`, or ``FileNotFoundError``."""
    path = osp.expanduser(str(path))
    if osp.isdir(path) and glob.glob(osp.join(path, 'rank*.pth')):
        raise CheckpointError(
            f"{path}: a folder of per-rank FSDP shards (mmengine's "
            "FSDPStrategy with state_dict_cfg='local'), which this project "
            "cannot read: train with state_dict_cfg='full' "
            '(configs/_base_/fsdp_runtime.py, MixedAEFSDPStrategy) to save '
            'ordinary checkpoints')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: no such checkpoint file')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if not _starts_like_torch_save(path):
            raise CheckpointError(
                f'{path}: not a checkpoint (torch.save writes a zip archive '
                'or a pickle; this file is neither): give a .pth file saved '
                'by torch') from None
        found = re.search(r'GLOBAL ([\w.]+)', str(err))
        what = f' ({found.group(1)})' if found else ''
        raise CheckpointError(
            f'{path}: holds pickled Python objects{what} besides tensors, '
            'which torch.load(weights_only=True) refuses because unpickling '
            'them could run code (plain mmengine/mmpretrain/mmseg/mmdet '
            'checkpoints pickle their message hub, official MAE ones their '
            f'argparse args). {_trust_advice(path)}') from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        # torch's first sentence says what failed; the rest is advice
        detail = str(err).strip().split('. ')[0].splitlines()
        detail = detail[0] if detail else type(err).__name__
        raise CheckpointError(
            f'{path}: not a complete checkpoint, it may be truncated or '
            f'corrupt ({detail}); use an earlier checkpoint or copy it '
            'again') from None


def _is_history_buffer(value) -> bool:
    # mmengine is not imported here: if its module is not loaded, no
    # HistoryBuffer can exist in this process
    module = sys.modules.get('mmengine.logging.history_buffer')
    return module is not None and isinstance(value, module.HistoryBuffer)


#: marks a ``HistoryBuffer`` stored as tensors
BUFFER_TAG = '__history_buffer__'


def to_weights_only(value):
    """Rebuild ``value`` from what ``weights_only`` loads: mmengine
    ``HistoryBuffer``\\ s become tagged dicts of tensors, numpy arrays
    tensors, numpy scalars Python numbers, ``argparse.Namespace`` dicts;
    containers are converted recursively, anything else kept."""
    import argparse
    if _is_history_buffer(value):
        return {
            BUFFER_TAG: True,
            'max_length': int(value.max_length),
            'log_history': _tensor_of(value._log_history),
            'count_history': _tensor_of(value._count_history),
        }
    np = sys.modules.get('numpy')
    if np is not None and isinstance(value, np.ndarray):
        return _tensor_of(value)
    if np is not None and isinstance(value, np.generic):
        return value.item()
    if isinstance(value, argparse.Namespace):
        return to_weights_only(vars(value))
    if isinstance(value, dict):  # other dict classes: weights_only refuses
        items = [(k, to_weights_only(v)) for k, v in value.items()]
        out = OrderedDict(items) if isinstance(value, OrderedDict) else \
            dict(items)
        if hasattr(value, '_metadata'):  # a module's state dict versions
            out._metadata = value._metadata
        return out
    if isinstance(value, (list, tuple)) and not hasattr(value, '_fields'):
        items = [to_weights_only(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def _tensor_of(array) -> torch.Tensor:
    return torch.from_numpy(sys.modules['numpy'].ascontiguousarray(array))


def check_weights_only(obj, name: str) -> None:
    """Raise :class:`CheckpointError` when ``obj`` would not load with
    ``weights_only=True`` (it is serialised to memory, not to disk)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, weights_only=True)
    except pickle.UnpicklingError as err:
        if not _starts_like_torch_save(path):
            raise CheckpointError(
                f'{path}: not a checkpoint (torch.save writes a zip archive '
                'or a pickle; this file is neither): give a .pth file saved '
                'by torch') from None
        found = re.search(r'GLOBAL ([\w.]+)', str(err))
        raise CheckpointError(
            f'{name}: holds an object that weights_only refuses and that '
            f'cannot be converted ({found.group(1) if found else err})'
        ) from None


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


def state_dict_of(checkpoint, source: str = 'the checkpoint') -> dict:
    """The tensors of a loaded checkpoint: its ``state_dict`` (mmengine),
    ``model`` (official MAE) or the dict itself, without the ``module.``
    prefix ``DistributedDataParallel`` adds."""
    state = checkpoint
    if isinstance(checkpoint, dict):
        for key in ('state_dict', 'model'):
            if isinstance(checkpoint.get(key), dict):
                state = checkpoint[key]
                break
    if not isinstance(state, dict):
        raise CheckpointError(
            f'{source}: holds a {type(state).__name__}, not a dict of '
            'tensors')
    return OrderedDict(
        (k[len('module.'):] if k.startswith('module.') else k, v)
        for k, v in state.items())


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
