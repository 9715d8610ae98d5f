"""mmengine's file I/O made atomic for writes and weights-only for reads.

Writes: mmengine's local backend writes a checkpoint in place, so a run
killed while saving leaves a truncated ``iter_N.pth``. The ``atomic_local``
backend writes through :func:`mixedae_mm.checkpoints.atomic_write`
(temporary file, fsync, rename, folder fsync)::

    default_hooks = dict(checkpoint=dict(
        type='CheckpointHook', backend_args=dict(backend='atomic_local')))

(``DurableCheckpointHook`` uses it by default.)

Reads: mmengine's checkpoint loaders call ``torch.load`` without
``weights_only``, so torch's default decides, and
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns a ``--resume evil.pth`` into
code execution. Importing this module re-registers the loaders of local
files and http(s) URLs (``load_from``, ``--resume``, ``init_cfg``
``Pretrained``, ``tools/test.py``) with ``weights_only=True`` passed
explicitly, which the environment cannot override.
"""
import os.path as osp
from pathlib import Path
from typing import Union

import torch
from mmengine.dist import get_dist_info
from mmengine.fileio import LocalBackend, register_backend
from mmengine.runner.checkpoint import CheckpointLoader

from ..checkpoints import atomic_write, load_weights_only


@register_backend('atomic_local')
class AtomicLocalBackend(LocalBackend):
    """``LocalBackend`` whose writes (``put``, ``put_text``) are atomic."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write(str(filepath), obj)

    def put_text(self,
                 obj: str,
                 filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
        atomic_write(str(filepath), obj.encode(encoding))


def load_from_local_weights_only(filename: str, map_location=None):
    """mmengine's loader for local paths, with ``weights_only=True``."""
    try:
        return load_weights_only(filename, map_location=map_location)
    except FileNotFoundError as err:
        raise FileNotFoundError(_explain_missing(filename, err)) from None


def _explain_missing(filename: str, err: Exception) -> str:
    pointer = osp.join(osp.dirname(osp.abspath(filename)), 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if osp.abspath(named) == osp.abspath(filename):
            return (f'{err}, though {pointer} names it (a run saved with '
                    "mmengine's CheckpointHook and max_keep_ckpts deletes "
                    'the old checkpoint before writing the new one, so a '
                    'kill in between leaves none): resume from another '
                    'checkpoint with --resume PATH, or start again')
    return str(err)


def load_from_http_weights_only(filename: str, map_location=None):
    """mmengine's loader for http(s) URLs, with ``weights_only=True``
    (rank 0 downloads first, the others then read its cache)."""
    rank, world_size = get_dist_info()

    def load():
        return torch.hub.load_state_dict_from_url(
            filename, map_location=map_location, weights_only=True)

    if rank == 0:
        checkpoint = load()
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = load()
    return checkpoint


CheckpointLoader.register_scheme(
    prefixes='', loader=load_from_local_weights_only, force=True)
CheckpointLoader.register_scheme(
    prefixes=('http://', 'https://'), loader=load_from_http_weights_only,
    force=True)
