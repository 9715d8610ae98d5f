"""``type='MixedAEViT'`` and mixedae_mm's checkpoint hooks inside
mmsegmentation configs."""
from mmseg.registry import HOOKS, MODELS

import mixedae_mm  # noqa: F401  (layer decay constructor, atomic_local)
from mixedae_mm.downstream import register_in

register_in(MODELS, HOOKS)
