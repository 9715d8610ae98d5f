"""``type='MixedAEViT'``, ``'SimpleFPN'`` and ``norm_cfg=dict(type='LN2d')``
inside mmdetection configs."""
from mmdet.registry import MODELS

import mixedae_mm  # noqa: F401  (mmpretrain registrations, hooks, optim)
from mixedae_mm.engine import optim  # noqa: F401  (layer decay constructor)
from mixedae_mm.models.backbones import MixedAEViT

from . import simple_fpn  # noqa: F401  (registers SimpleFPN and LN2d)

MODELS.register_module(name='MixedAEViT', module=MixedAEViT)
