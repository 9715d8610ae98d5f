"""Checkpoint files that are either complete or absent.

mmengine's local backend writes a checkpoint in place, so a run killed while
saving (preemption, out of disk) leaves a truncated ``iter_N.pth`` that
``--resume iter_N.pth`` then fails to read. ``AtomicLocalBackend`` writes to
a temporary file in the same folder, flushes it to disk and renames it over
the target (``os.replace`` is atomic on POSIX and Windows), so readers see
the old file or the new one, never a part.

Use it for checkpoints with::

    default_hooks = dict(checkpoint=dict(
        type='CheckpointHook', backend_args=dict(backend='atomic_local')))
"""
import os
import os.path as osp
import tempfile
from pathlib import Path
from typing import Union

from mmengine.fileio import LocalBackend, register_backend


def write_atomic(data: bytes, filepath: Union[str, Path]) -> None:
    """Write ``data`` to ``filepath`` all at once or not at all."""
    filepath = str(filepath)
    folder = osp.dirname(osp.abspath(filepath))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=folder, prefix=f'.{osp.basename(filepath)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


@register_backend('atomic_local')
class AtomicLocalBackend(LocalBackend):
    """``LocalBackend`` whose writes (``put``, ``put_text``) are atomic."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        write_atomic(obj, filepath)

    def put_text(self,
                 obj: str,
                 filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
        write_atomic(obj.encode(encoding), filepath)
