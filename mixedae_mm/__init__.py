"""MixedAE for OpenMMLab 2.x.

Importing the package registers the MixedAE modules in mmpretrain's
registries (also through ``custom_imports=dict(imports=['mixedae_mm'])``)
and our recipes in mmpretrain's model index (``list_models('*mixedae*')``),
and makes ``get_model``/the inferencers refuse a checkpoint that does not
fit one of our models (``mixedae_mm.apis.install_strict_loading``).

Where mmpretrain is not installed, there is nothing to register in:
``mixedae_mm.ops`` (the method) and ``mixedae_mm.checkpoints`` (what the
converters use) need only torch, and import without it.
"""
from .version import __version__

try:
    import mmpretrain  # noqa: F401
except ModuleNotFoundError as error:
    if error.name != 'mmpretrain':
        raise  # an installed mmpretrain that is broken must not go unnoticed
else:
    from . import datasets, engine, models  # noqa: F401  (registers modules)
    from .apis import install_strict_loading, register_model_index

    # mmpretrain.list_models / get_model know our recipes by name
    register_model_index()
    # and get_model / the inferencers refuse a checkpoint that does not fit
    install_strict_loading()

__all__ = ['__version__']
