from typing import Dict, Optional

from mmpretrain.models import MAEPretrainHead
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from ... import ops


@MODELS.register_module()
class MixedAEPretrainHead(MAEPretrainHead):
    """Pixel reconstruction (MAE's) + homologous contrastive loss.

    Args:
        loss (dict): Reconstruction criterion, as ``MAEPretrainHead``.
        norm_pix (bool): Per-patch normalised pixel target (MAE's norm_pix).
        patch_size (int): Filled in from the backbone by :class:`MixedAE`.
        homo_loss_weight (float): ``lambda``; 0 turns the contrastive loss
            off (and skips its computation).
        homo_temperature (float): ``tau`` of the contrastive loss.
        homo_projector (dict, optional): Module applied to the encoder's
            patch tokens before the contrastive loss; ``None`` = identity.
    """

    def __init__(self,
                 loss: dict = dict(type='PixelReconstructionLoss',
                                   criterion='L2'),
                 norm_pix: bool = True,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 homo_loss_weight: float = 0.5,
                 homo_temperature: float = 0.25,
                 homo_projector: Optional[dict] = None) -> None:
        super().__init__(
            loss=loss,
            norm_pix=norm_pix,
            patch_size=patch_size,
            in_channels=in_channels)
        if homo_loss_weight < 0:
            raise ValueError(f'homo_loss_weight must be >= 0, '
                             f'got {homo_loss_weight}')
        if homo_temperature <= 0:
            raise ValueError(f'homo_temperature must be > 0, '
                             f'got {homo_temperature}')
        self.homo_loss_weight = homo_loss_weight
        self.homo_temperature = homo_temperature
        self.homo_projector = MODELS.build(
            homo_projector) if homo_projector else nn.Identity()

    def loss(self,
             pred: Tensor,
             target: Tensor,
             mask: Tensor,
             latent: Optional[Tensor] = None,
             owner: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Named loss terms.

        Args:
            pred: ``(B, N, p * p * C)`` decoder output.
            target: ``(B, C, H, W)`` input images.
            mask: ``(B, N)``, 1 where the image's patch was not visible.
            latent: ``(M, N + 1, D)`` encoder output of the mixed samples.
            owner: ``(M, N)`` partition. Without it (MAE) only ``loss_rec``.

        Returns:
            ``loss_rec`` and, when mixing with ``homo_loss_weight > 0``,
            ``loss_homo`` already multiplied by ``homo_loss_weight`` (so the
            total is their sum, as mmengine adds every ``loss*`` term).
        """
        losses = dict(loss_rec=super().loss(pred, target, mask))
        if owner is not None and self.homo_loss_weight > 0:
            features = self.homo_projector(latent[:, 1:])
            losses['loss_homo'] = self.homo_loss_weight * \
                ops.homologous_contrastive_loss(features, owner,
                                                self.homo_temperature)
        return losses
