"""MixedAE for OpenMMLab 2.x.

Importing the package registers the MixedAE modules in mmpretrain's
registries (also through ``custom_imports=dict(imports=['mixedae_mm'])``)
and our recipes in mmpretrain's model index (``list_models('*mixedae*')``).
``mixedae_mm.ops`` alone needs only torch.
"""
from .version import __version__
from . import datasets, engine, models  # noqa: F401  (registers modules)
from .apis import register_model_index

# mmpretrain.list_models / get_model know our recipes by name
register_model_index()

__all__ = ['__version__']
