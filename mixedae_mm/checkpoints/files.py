"""Checkpoint files: written complete or not at all, read without code.

Needs only torch and the standard library, like everything in
``mixedae_mm.checkpoints``: the converters run where OpenMMLab is not
installed, and the training hooks use the same two functions.

Writing (:func:`atomic_write`, the one atomic write of the project): the
bytes go to a hidden temporary file ``.<name>.<random>.tmp`` in the target's
folder, are flushed to disk, get the mode a plain ``open`` would give
(``0o666 & ~umask``; ``mkstemp`` makes 0o600), and are renamed over the
target (``os.replace`` is atomic); the folder is then fsynced so that the
rename itself survives a power cut. A killed writer leaves only a temporary
file, which :func:`remove_stale_temps` deletes.

Reading (:func:`load_weights_only`, the one weights-only load): always passes
``weights_only=True``, so no environment variable
(``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``) can make a checkpoint run code, and
turns torch's errors into one line naming the file and what to do.
"""
import contextlib
import glob
import io
import os
import os.path as osp
import pickle
import re
import sys
import tempfile
from collections import OrderedDict
from typing import BinaryIO, Callable, Dict, List, Optional, Tuple, Union

import torch

__all__ = [
    'CheckpointError', 'TRUST_TOOL', 'atomic_write', 'remove_stale_temps',
    'load_weights_only', 'read_state_dict', 'to_weights_only',
    'check_weights_only', 'state_dict_of', 'check_destination',
    'add_overwrite_flag', 'OVERWRITE_FLAG', 'checkpoint_format',
    'exit_on_error', 'trusted_load'
]

#: the command that turns a trusted pickled checkpoint into a loadable one
TRUST_TOOL = 'python tools/model_converters/trust_checkpoint.py'
#: ``.<target name>.<8 random chars of mkstemp>.tmp``
_TEMP_NAME = re.compile(r'\..+\.[a-z0-9_]{8}\.tmp')


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (missing, truncated, corrupt, or
    holding pickled objects ``weights_only`` refuses)."""


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
                 content: Union[bytes, Callable[[BinaryIO], None]],
                 final_path: Optional[Callable[[str], str]] = None) -> str:
    """Create ``path`` complete or not at all.

    Args:
        content: the bytes to write, or a function that writes the content
            to the binary file it is given (``lambda f: torch.save(obj,
            f)``).
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
            if callable(content):
                content(f)
            else:
                f.write(content)
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


#: the converters' flag that lets them replace a checkpoint they would keep
OVERWRITE_FLAG = '--overwrite'


def add_overwrite_flag(parser) -> None:
    parser.add_argument(
        OVERWRITE_FLAG, action='store_true',
        help='write DST even if it is SRC or the checkpoint that '
        "last_checkpoint in DST's folder names (by default refused: a run "
        'resumes from that file)')


@contextlib.contextmanager
def exit_on_error(tool: str):
    """A converter's one-line errors: a :class:`CheckpointError` in the
    block exits with ``<tool>: error: <message>`` (status 1)."""
    try:
        yield
    except CheckpointError as err:
        sys.exit(f'{tool}: error: {err}')


def _same_file(a: str, b: str) -> bool:
    try:
        return osp.samefile(a, b)
    except OSError:  # one of them does not exist
        return osp.realpath(a) == osp.realpath(b)


def check_destination(dst: str, src: str, overwrite: bool = False) -> None:
    """Refuse (:class:`CheckpointError`) to write a converter's output to
    ``dst`` where that would destroy a checkpoint: ``dst`` is ``src``, or
    the checkpoint that ``last_checkpoint`` in ``dst``'s folder names (the
    file a run resumes from); ``overwrite`` allows both. A folder is never
    a destination. Call it before the work."""
    dst, src = osp.expanduser(str(dst)), osp.expanduser(str(src))
    if osp.isdir(dst):
        raise CheckpointError(
            f'{dst} is a folder: give the output a file name, e.g. '
            f'{osp.join(dst, "model.pth")}')
    if overwrite:
        return
    if _same_file(dst, src):
        raise CheckpointError(
            f'{dst} is the input checkpoint: writing there would replace '
            f'it; give another output name (or {OVERWRITE_FLAG} to replace '
            'it)')
    pointer = osp.join(osp.dirname(osp.abspath(dst)), 'last_checkpoint')
    try:
        with open(pointer) as f:
            named = f.read().strip()
    except OSError:
        return
    folder = osp.dirname(pointer)
    # mmengine writes the path as the run saw it (absolute, or relative to
    # where the run was started): its file name in this folder counts
    if named and (_same_file(dst, named) or _same_file(
            dst, osp.join(folder, osp.basename(named)))):
        raise CheckpointError(
            f'{dst} is the checkpoint that {pointer} names, which --resume '
            'continues from: give another output name (or '
            f'{OVERWRITE_FLAG} to replace it)')


def _trust_advice(path: str) -> str:
    stem, ext = osp.splitext(path)
    return (f'If you trust where it comes from, convert it once: '
            f'{TRUST_TOOL} {path} {stem}_weights_only{ext or ".pth"} '
            '--trust')


#: how torch.save's output begins: a zip archive's local file header, or
#: (the legacy format, ``_use_new_zipfile_serialization=False``) the
#: pickle PROTO opcode and a protocol number
_ZIP_MAGIC = b'PK\x03\x04'
_PICKLE_PROTOCOLS = range(2, 6)


def checkpoint_format(path: str) -> str:
    """``'zip'`` or ``'pickle'`` for a file that begins as torch.save's
    output does; else :class:`CheckpointError` saying what the file is
    (a folder, an empty file, a text file, other bytes), so that no
    unpickler is ever run on it (which fails with any error at all, e.g.
    ``KeyError: 101`` on a text file). ``FileNotFoundError`` if there is
    nothing at ``path``."""
    if osp.isdir(path):
        raise CheckpointError(f'{path}: a folder, not a checkpoint file: '
                              'give the .pth file inside it')
    if not osp.exists(path):
        raise FileNotFoundError(f'{path}: no such checkpoint file')
    with open(path, 'rb') as f:
        head = f.read(64)
    if head.startswith(_ZIP_MAGIC):
        return 'zip'
    if head[:1] == b'\x80' and len(head) > 1 and \
            head[1] in _PICKLE_PROTOCOLS:
        return 'pickle'
    if not head:
        what = 'an empty file (0 bytes)'
    elif _looks_like_text(head):
        first = head.decode('utf-8', errors='replace').splitlines()[0][:40]
        what = f'a text file (it begins {first!r})'
    else:
        what = (f'{osp.getsize(path)} bytes that are neither a zip archive '
                'nor a pickle')
    raise CheckpointError(
        f'{path}: not a checkpoint, {what}; torch.save writes a zip archive '
        '(or a pickle): give a .pth file saved by torch')


def _looks_like_text(head: bytes) -> bool:
    # the 64 bytes read may end inside a character
    text = head.decode('utf-8', errors='replace').rstrip('\ufffd')
    return '\ufffd' not in text and all(
        c.isprintable() or c in '\t\r\n' for c in text)


def load_weights_only(path: str, map_location='cpu'):
    """``torch.load(path, weights_only=True)`` with one-line errors that name
    the file: :class:`CheckpointError`, or ``FileNotFoundError``. The file's
    first bytes are checked before anything is unpickled
    (:func:`checkpoint_format`)."""
    path = osp.expanduser(str(path))
    if osp.isdir(path) and glob.glob(osp.join(path, 'rank*.pth')):
        raise CheckpointError(
            f"{path}: a folder of per-rank FSDP shards (mmengine's "
            "FSDPStrategy with state_dict_cfg='local'), which this project "
            "cannot read: train with state_dict_cfg='full' "
            '(configs/_base_/fsdp_runtime.py, MixedAEFSDPStrategy) to save '
            'ordinary checkpoints')
    checkpoint_format(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r'GLOBAL ([\w.]+)', str(err))
        if not found and 'Unsupported global' not in str(err) and \
                'Unsupported class' not in str(err):
            raise _incomplete(path, err) from None  # damaged, not refused
        what = f' ({found.group(1)})' if found else ''
        raise CheckpointError(
            f'{path}: holds pickled Python objects{what} besides tensors, '
            'which torch.load(weights_only=True) refuses because unpickling '
            'them could run code (plain mmengine/mmpretrain/mmseg/mmdet '
            'checkpoints pickle their message hub, official MAE ones their '
            f'argparse args). {_trust_advice(path)}') from None
    except Exception as err:  # noqa: B902
        # a file that begins right and then breaks: an unpickler on
        # damaged data fails with about any error (EOFError, KeyError, ...)
        raise _incomplete(path, err) from None


def _incomplete(path: str, err: Exception) -> CheckpointError:
    # torch's first sentence says what failed; the rest is advice
    detail = str(err).strip().split('. ')[0].splitlines()
    detail = detail[0] if detail else type(err).__name__
    return CheckpointError(
        f'{path}: not a complete checkpoint, it may be truncated or corrupt '
        f'({detail}); use an earlier checkpoint or copy it again')


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
        found = re.search(r'GLOBAL ([\w.]+)', str(err))
        raise CheckpointError(
            f'{name}: holds an object that weights_only refuses and that '
            f'cannot be converted ({found.group(1) if found else err})'
        ) from None


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


def trusted_load(path: str):
    """``torch.load(weights_only=False)`` of a file from a source the caller
    trusts (``tools/model_converters/trust_checkpoint.py --trust``): it runs
    whatever code the file pickles. Every failure is a
    :class:`CheckpointError` of one line."""
    try:  # nothing is unpickled from a file that is no checkpoint
        checkpoint_format(path)
    except FileNotFoundError as err:
        raise CheckpointError(str(err)) from None
    try:
        return torch.load(path, map_location='cpu', weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, KeyError,
            IndexError, pickle.UnpicklingError) as err:
        # a file that begins right and then breaks: the unpickler fails on
        # damaged data with about any of these
        detail = str(err).strip().split('. ')[0].splitlines()
        raise CheckpointError(
            f'{path}: not a complete checkpoint, it may be truncated or '
            f'corrupt ({detail[0] if detail else type(err).__name__})'
        ) from None
    except (ImportError, AttributeError) as err:
        raise CheckpointError(
            f'{path}: pickles a class this environment does not have '
            f'({err}); run the tool where the code that saved it is '
            'installed') from None


def read_state_dict(path: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """``(tensors, whole checkpoint)`` of a file read with
    :func:`load_weights_only`: the tensors as :func:`state_dict_of` finds
    them. Every failure, a missing file included, is a
    :class:`CheckpointError` whose message starts with ``path``."""
    try:
        checkpoint = load_weights_only(path)
    except FileNotFoundError as err:
        raise CheckpointError(str(err)) from None
    state = state_dict_of(checkpoint, path)
    not_tensors = [k for k, v in state.items()
                   if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f'{path}: expected the weights under "state_dict", "model" or at '
            f'top level, but these entries are not tensors: '
            f'{not_tensors[:10]}')
    return state, checkpoint
