"""The homologous contrastive loss: patch tokens of one source image are
pulled together, tokens of the other images of the mix pushed apart."""
import torch
import torch.nn.functional as F
from torch import Tensor

from .mixing import homologous_target


def homologous_contrastive_loss(features: Tensor, owner: Tensor,
                                temperature: float) -> Tensor:
    """Supervised contrastive loss over the patch tokens of each mixed sample.

    For token ``i`` the positives are the other tokens with the same owner,
    the candidates are all other tokens of its mixed sample:
    ``-mean_{p in P(i)} log softmax_{a != i}(z_i . z_a / tau)[p]``,
    averaged over tokens and samples.

    Computed in fp32 even under autocast: with ``tau = 0.25`` the logits
    span [-4, 4], where bf16 keeps only two to three significant digits.

    Args:
        features: ``(M, N, C)``; L2-normalised inside.
        owner: ``(M, N)``.
        temperature: ``tau``.

    Returns:
        Scalar fp32 loss.
    """
    with torch.autocast(device_type=features.device.type, enabled=False):
        return _homologous_contrastive_loss_fp32(features.float(), owner,
                                                 temperature)


def _homologous_contrastive_loss_fp32(features: Tensor, owner: Tensor,
                                      temperature: float) -> Tensor:
    z = F.normalize(features, dim=-1)
    logits = z @ z.transpose(1, 2) / temperature
    num_patches = owner.shape[1]
    self_mask = torch.eye(num_patches, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float('-inf'))
    log_prob = logits.log_softmax(dim=-1)
    positives = homologous_target(owner) & ~self_mask
    # -inf * 0 on the diagonal would be NaN: zero it before the weighted sum.
    log_prob = log_prob.masked_fill(self_mask, 0.0)
    pos_log_prob = (log_prob * positives).sum(-1) / positives.sum(-1).clamp(
        min=1)
    return -pos_log_prob.mean()

