"""``type='MixedAEViT'``, ``'SimpleFPN'``, ``norm_cfg=dict(type='LN2d')`` and
mixedae_mm's hooks and image loader inside mmdetection configs."""
from mmdet.registry import HOOKS, MODELS, TRANSFORMS

import mixedae_mm  # noqa: F401  (layer decay constructor, atomic_local)
from mixedae_mm.downstream import register_in

from . import simple_fpn  # noqa: F401  (registers SimpleFPN and LN2d)

register_in(MODELS, HOOKS, TRANSFORMS)
