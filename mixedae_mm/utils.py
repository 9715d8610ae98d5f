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
