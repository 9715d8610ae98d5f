"""``type='MixedAEViT'`` inside mmsegmentation configs."""
from mmseg.registry import MODELS

import mixedae_mm  # noqa: F401  (mmpretrain registrations, hooks, optim)
from mixedae_mm.engine import optim  # noqa: F401  (layer decay constructor)
from mixedae_mm.models.backbones import MixedAEViT

MODELS.register_module(name='MixedAEViT', module=MixedAEViT)
