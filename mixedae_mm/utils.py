"""Small torch helpers shared across the package (torch only: importable
without mmpretrain, like ``mixedae_mm.ops``)."""
import contextlib
from typing import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the block, then back in the mode it
    had (``module.train(was_training)``, also when the block raises)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def code_commit() -> str:
    """The commit of the code that runs (this clone's ``HEAD``),
    ``+dirty`` when its ``mixedae_mm``, ``configs`` or ``tools`` differ,
    ``unknown`` outside a git clone: what a result records."""
    import os.path as osp
    import subprocess
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))

    def git(*args):
        try:
            return subprocess.run(['git', *args], cwd=root,
                                  capture_output=True, text=True).stdout.strip()
        except OSError:
            return ''
    commit = git('rev-parse', 'HEAD') or 'unknown'
    dirty = git('status', '--porcelain', '--untracked-files=no', '--',
                'mixedae_mm', 'configs', 'tools')
    return commit + ('+dirty' if dirty else '')
