"""``type='MixedAEViT'`` and mixedae_mm's hooks and image loader inside
mmsegmentation configs."""
from mmseg.registry import HOOKS, MODELS, TRANSFORMS

import mixedae_mm  # noqa: F401  (layer decay constructor, atomic_local)
from mixedae_mm.downstream import register_in

register_in(MODELS, HOOKS, TRANSFORMS)
