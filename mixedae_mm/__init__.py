"""MixedAE for OpenMMLab 2.x.

Importing the package registers the MixedAE modules in mmpretrain's
registries (also through ``custom_imports=dict(imports=['mixedae_mm'])``)
and our recipes in mmpretrain's model index (``list_models('*mixedae*')``),
and makes ``get_model``/the inferencers refuse a checkpoint that does not
fit one of our models (``mixedae_mm.apis.install_strict_loading``).
``mixedae_mm.ops`` alone needs only torch.
"""
from .version import __version__
from . import datasets, engine, models  # noqa: F401  (registers modules)
from .apis import install_strict_loading, register_model_index

# mmpretrain.list_models / get_model know our recipes by name
register_model_index()
# and get_model / the inferencers refuse a checkpoint that does not fit
install_strict_loading()

__all__ = ['__version__']
