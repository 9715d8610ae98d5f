"""MixedAE for OpenMMLab 2.x.

Importing the package registers the MixedAE modules in mmpretrain's
registries (also through ``custom_imports=dict(imports=['mixedae_mm'])``).
``mixedae_mm.ops`` alone needs only torch.
"""
from .version import __version__
from . import datasets, engine, models  # noqa: F401  (registers modules)

__all__ = ['__version__']
