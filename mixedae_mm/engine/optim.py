"""Layer-wise learning-rate decay for MixedAE's ViT, in any OpenMMLab codebase.

mmpretrain's, mmseg's and mmdet's layer-decay constructors each recognise
their own backbones (by class name or by ``blocks.`` naming); this one is
registered in mmengine's root registry, so mmpretrain, mmseg and mmdet
configs all find it, and it reads depths from the parameter names of
``MixedAEViT`` (mmpretrain ViT names).
"""
import re
from typing import Dict, Iterable, List, Tuple

import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

#: parameters without weight decay, besides every 1-D tensor (norm weights
#: and biases): embeddings and tables, whose scale carries no capacity
NO_DECAY_NAMES = ('pos_embed', 'cls_token', 'mask_token', 'segment_embed',
                  'relative_position_bias_table')


def layer_depth(name: str, num_layers: int,
                backbone_prefix: str = 'backbone.') -> int:
    """Depth of a parameter for layer decay, in ``[0, num_layers + 1]``.

    Embeddings (patch, position, cls, segment) are depth 0, encoder layer
    ``i`` is ``i + 1``, and the rest (final norms, necks, heads) is
    ``num_layers + 1``: it keeps the base learning rate.
    """
    if not name.startswith(backbone_prefix):
        return num_layers + 1
    name = name[len(backbone_prefix):]
    if name.startswith(('patch_embed', 'cls_token', 'pos_embed',
                        'segment_embed')):
        return 0
    match = re.match(r'layers\.(\d+)\.', name)
    if match:
        return int(match.group(1)) + 1
    return num_layers + 1


def lr_scale(depth: int, num_layers: int, decay_rate: float) -> float:
    """``decay_rate ** (num_layers + 1 - depth)``."""
    return decay_rate**(num_layers + 1 - depth)


def uses_weight_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim > 1 and not any(n in name for n in NO_DECAY_NAMES)


def layer_decay_param_groups(
        named_parameters: Iterable[Tuple[str, nn.Parameter]],
        num_layers: int, base_lr: float, decay_rate: float,
        weight_decay: float, backbone_prefix: str = 'backbone.'
) -> Dict[Tuple[int, bool], dict]:
    """The one layer-decay rule: parameter groups by ``(depth, decay)``.

    Every trainable parameter of ``named_parameters`` goes to the group of
    its :func:`layer_depth` and :func:`uses_weight_decay`, with
    ``lr = base_lr * lr_scale(depth)`` and ``weight_decay`` or 0. Groups
    keep the order of their first parameter, and each holds ``params``,
    ``param_names``, ``lr``, ``lr_scale`` and ``weight_decay``. Used by
    :class:`ViTLayerDecayOptimWrapperConstructor` (the recipes) and by
    ``evaluation.probes.fine_tune`` (the study). Frozen parameters are
    left out.
    """
    groups = {}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        depth = layer_depth(name, num_layers, backbone_prefix)
        decay = uses_weight_decay(name, param)
        key = (depth, decay)
        if key not in groups:
            scale = lr_scale(depth, num_layers, decay_rate)
            groups[key] = dict(
                params=[],
                param_names=[],
                lr=base_lr * scale,
                lr_scale=scale,
                weight_decay=weight_decay if decay else 0.)
        groups[key]['params'].append(param)
        groups[key]['param_names'].append(name)
    return groups


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class ViTLayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Layer-wise lr decay + weight-decay exclusions for ``MixedAEViT``.

    ``paramwise_cfg`` keys:

    - ``layer_decay_rate`` (float, required): lr of depth ``d`` is
      ``base_lr * rate ** (num_layers + 1 - d)``.
    - ``num_layers`` (int, optional): defaults to
      ``model.<backbone>.num_layers``.
    - ``backbone`` (str): attribute of the backbone, default ``'backbone'``.

    Weight decay is off for 1-D parameters (norms, biases) and for
    ``NO_DECAY_NAMES``. Frozen parameters are left out.
    """

    def add_params(self, params: List[dict], module: nn.Module,
                   prefix: str = '', **kwargs) -> None:
        cfg = dict(self.paramwise_cfg)
        if 'layer_decay_rate' not in cfg:
            raise ValueError('ViTLayerDecayOptimWrapperConstructor needs '
                             'paramwise_cfg.layer_decay_rate')
        rate = cfg['layer_decay_rate']
        backbone_name = cfg.get('backbone', 'backbone')
        num_layers = cfg.get('num_layers')
        if num_layers is None:
            backbone = getattr(module, backbone_name, None)
            if backbone is None or not hasattr(backbone, 'num_layers'):
                raise ValueError(
                    f'model has no {backbone_name!r} with num_layers: set '
                    'paramwise_cfg.num_layers (or .backbone)')
            num_layers = backbone.num_layers
        groups = layer_decay_param_groups(
            module.named_parameters(), num_layers, self.base_lr, rate,
            self.base_wd or 0., backbone_name + '.')
        params.extend(groups[k] for k in sorted(groups))
        MMLogger.get_current_instance().info(
            f'layer decay {rate} over {num_layers} layers: '
            f'{len(groups)} parameter groups')

