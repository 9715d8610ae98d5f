from typing import Dict, List, Optional, Tuple

from mmpretrain.models import BaseSelfSupervisor
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from ... import ops
from ...apis import with_test_pipeline
from ..backbones import MixedEncoding


class MixedAE(BaseSelfSupervisor):
    """MixedAE: Mixed Autoencoder (Chen et al., CVPR 2023).

    Wires :class:`MixedAEViT` (mix + homologous attention),
    :class:`MixedAEPretrainDecoder` (un-mix + pixel prediction) and
    :class:`MixedAEPretrainHead` (reconstruction + homologous contrastive
    loss).

    Configs build it through the registered ``type='MixedAE'``
    (:func:`.ablations.build_mixedae`), which resolves ``ablation`` and
    ``segment_embed`` into the parts' settings and derives the shapes the
    neck and head need (``num_patches``, widths, patch and group size) from
    the backbone, so only the backbone says how big the images and the
    model are. This class takes the resolved parts.

    Args:
        segment_embed (str): Where the group-slot embedding went
            (``'decoder'``, ``'encoder'`` or ``'none'``), as resolved.
        ablation (str): The ablation the parts were resolved for (a label:
            ``'none'``, ``'mae'``, ``'naive_mixing'``, ``'homo_attn_only'``).
        Other arguments are those of ``BaseSelfSupervisor``.
    """

    def __init__(self,
                 backbone: nn.Module,
                 neck: dict,
                 head: dict,
                 segment_embed: str = 'decoder',
                 ablation: str = 'none',
                 **kwargs) -> None:
        super().__init__(backbone=backbone, neck=neck, head=head, **kwargs)
        self.segment_embed = segment_embed
        self.ablation = ablation

    @property
    def _config(self):
        return self.__dict__.get('_inference_config')

    @_config.setter
    def _config(self, config):
        # mmpretrain's get_model stores the config here and its inferencers
        # read their pipeline from it: see with_test_pipeline
        self.__dict__['_inference_config'] = with_test_pipeline(config)

    def extract_feat(self, inputs: Tensor):
        """Un-mixed features: the backbone as a plain ViT (no mixing, global
        attention)."""
        return self.backbone(inputs, mask=None)

    def loss(self, inputs: Tensor, data_samples: List[DataSample],
             **kwargs) -> Dict[str, Tensor]:
        """Named loss terms, plus homologous accuracy for logging."""
        pred, hidden, encoding = self.encode_decode(inputs)
        losses = self.head.loss(
            pred, inputs, hidden, latent=encoding.tokens, owner=encoding.owner)
        accuracy = encoding.homo_accuracy
        if accuracy.numel():  # layers with homologous attention
            losses['homo_acc'] = accuracy.mean()
            for layer, value in zip(self.backbone.homo_attn_layers, accuracy):
                losses[f'homo_acc_l{layer}'] = value
        return losses

    def encode_decode(self, inputs: Tensor
                      ) -> Tuple[Tensor, Tensor, Optional[MixedEncoding]]:
        """Encode, decode: ``(pred (B, N, P), hidden (B, N), encoding)``,
        ``hidden`` 1 where the loss counts a patch, ``encoding`` the
        backbone's :class:`MixedEncoding`."""
        encoding = self.backbone.forward_mixed(inputs)
        pred = self.neck(encoding.tokens, encoding.owner)
        hidden = ops.reconstruction_mask(encoding.owner,
                                         self.backbone.group_size)
        return pred, hidden, encoding


class MAEAblation(MixedAE):
    """``ablation='mae'``: MAE's random masking instead of mixing, with
    MixedAE's encoder, decoder and reconstruction loss (built by
    ``type='MixedAE'`` when the backbone has ``mixing=False``)."""

    def loss(self, inputs: Tensor, data_samples: List[DataSample],
             **kwargs) -> Dict[str, Tensor]:
        """The reconstruction loss alone."""
        pred, mask, _ = self.encode_decode(inputs)
        return self.head.loss(pred, inputs, mask)

    def encode_decode(self, inputs: Tensor) -> Tuple[Tensor, Tensor, None]:
        """``(pred (B, N, P), mask (B, N), None)``, ``mask`` 1 where the
        patch was hidden (no :class:`MixedEncoding`: nothing is mixed)."""
        latent, mask, ids_restore = self.backbone.forward_masked(inputs)
        return self.neck.forward_masked(latent, ids_restore), mask, None
