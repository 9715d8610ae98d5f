"""Old import path, kept for existing scripts: the same functions live in
:mod:`mixedae_mm.checkpoints`. ``write_bytes_atomic(data, path)`` is now
``atomic_write(path, data)``."""
from .checkpoints.files import *  # noqa: F401,F403
from .checkpoints.files import BUFFER_TAG, fsync_dir  # noqa: F401
from .checkpoints.strict_loading import *  # noqa: F401,F403
