import copy
from typing import Dict, List, Optional

import torch
from mmpretrain.models import BaseSelfSupervisor
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor

from ... import ops

#: ``ablation`` presets: the paper's ablations, one config line each.
ABLATIONS = {
    # MixedAE as specified: mixing, homologous attention, contrastive loss.
    'none': dict(),
    # random masking instead of mixing, same encoder/decoder: MAE
    'mae': dict(backbone=dict(mixing=False)),
    # mix and reconstruct, nothing else
    'naive_mixing': dict(
        backbone=dict(homo_attn_layers=[]), head=dict(homo_loss_weight=0.)),
    # mixing + homologous attention, no contrastive loss
    'homo_attn_only': dict(head=dict(homo_loss_weight=0.)),
}
SEGMENT_EMBED_CHOICES = ('decoder', 'encoder', 'none')


def _set(cfg: dict, key: str, value, reason: str) -> None:
    """Fill ``cfg[key]``; a different value set by hand is an error."""
    if key in cfg and cfg[key] != value:
        raise ValueError(
            f"{cfg.get('type', 'module')}.{key}={cfg[key]!r} contradicts "
            f'{reason} (which needs {value!r}); remove it from the config')
    cfg[key] = value


@MODELS.register_module()
class MixedAE(BaseSelfSupervisor):
    """MixedAE: Mixed Autoencoder (Chen et al., CVPR 2023).

    Wires :class:`MixedAEViT` (mix + homologous attention),
    :class:`MixedAEPretrainDecoder` (un-mix + pixel prediction) and
    :class:`MixedAEPretrainHead` (reconstruction + homologous contrastive
    loss). Shapes the neck and head need (``num_patches``, widths, patch and
    group size) are derived from the backbone config, so only the backbone
    says how big the images and the model are.

    Args:
        segment_embed (str): Where the learnable group-slot embedding goes:
            ``'decoder'`` (default), ``'encoder'`` or ``'none'``. Ignored
            (``'none'``) with ``ablation='mae'``.
        ablation (str): ``'none'`` (full MixedAE), ``'mae'``,
            ``'naive_mixing'`` or ``'homo_attn_only'``; see ``ABLATIONS``.
        Other arguments are those of ``BaseSelfSupervisor``.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 segment_embed: str = 'decoder',
                 ablation: str = 'none',
                 **kwargs) -> None:
        if ablation not in ABLATIONS:
            raise ValueError(f'ablation must be one of {sorted(ABLATIONS)}, '
                             f'got {ablation!r}')
        if segment_embed not in SEGMENT_EMBED_CHOICES:
            raise ValueError(f'segment_embed must be one of '
                             f'{SEGMENT_EMBED_CHOICES}, got {segment_embed!r}')
        if ablation == 'mae':
            # no groups, so no group slots to embed (and no unused
            # parameter for DDP to trip on)
            segment_embed = 'none'
        backbone, neck, head = (copy.deepcopy(dict(c))
                                for c in (backbone, neck, head))
        for part, overrides in ABLATIONS[ablation].items():
            cfg = dict(backbone=backbone, head=head)[part]
            for key, value in overrides.items():
                _set(cfg, key, value, f'ablation={ablation!r}')
        _set(backbone, 'segment_embed', segment_embed == 'encoder',
             f'segment_embed={segment_embed!r}')
        _set(neck, 'segment_embed', segment_embed == 'decoder',
             f'segment_embed={segment_embed!r}')

        backbone = MODELS.build(backbone)
        derived = 'the backbone'
        _set(neck, 'num_patches', backbone.num_patches, derived)
        _set(neck, 'embed_dim', backbone.embed_dims, derived)
        _set(neck, 'patch_size', backbone.patch_size, derived)
        _set(neck, 'group_size', backbone.group_size, derived)
        _set(head, 'patch_size', backbone.patch_size, derived)
        super().__init__(backbone=backbone, neck=neck, head=head, **kwargs)
        self.segment_embed = segment_embed
        self.ablation = ablation

    def extract_feat(self, inputs: Tensor):
        """Un-mixed features: the backbone as a plain ViT (no mixing, global
        attention)."""
        return self.backbone(inputs, mask=None)

    def loss(self, inputs: Tensor, data_samples: List[DataSample],
             **kwargs) -> Dict[str, Tensor]:
        """Named loss terms, plus homologous accuracy for logging."""
        if not self.backbone.mixing:
            latent, mask, ids_restore = self.backbone(inputs, mask=True)
            pred = self.neck(latent, ids_restore=ids_restore)
            return self.head.loss(pred, inputs, mask)

        encoding = self.backbone(inputs, mask=True)
        pred = self.neck(encoding.tokens, owner=encoding.owner)
        mask = ops.reconstruction_mask(encoding.owner, self.backbone.group_size)
        losses = self.head.loss(
            pred, inputs, mask, latent=encoding.tokens, owner=encoding.owner)
        accuracy = encoding.homo_accuracy
        if accuracy.numel():
            losses['homo_acc'] = accuracy.mean()
            for layer, value in zip(self.backbone.homo_attn_layers, accuracy):
                losses[f'homo_acc_l{layer}'] = value
        return losses
