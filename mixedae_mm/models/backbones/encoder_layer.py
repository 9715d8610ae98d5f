from typing import Optional, Tuple

from mmengine.model import BaseModule
from mmpretrain.models.backbones.vision_transformer import \
    TransformerEncoderLayer
from torch import Tensor

from .attention import MixedAEAttention, window_partition, window_unpartition


class MixedAEEncoderLayer(TransformerEncoderLayer):
    """mmpretrain's ``TransformerEncoderLayer`` with MixedAE's attention:
    homologous (top-k) attention while pretraining, windowed attention
    (ViTDet) in transfer. Its parameters and their names are the parent's.

    A whole layer is one call of :meth:`forward`, so activation
    checkpointing (``with_cp``) and FSDP wrap whole layers.

    Args:
        window_size (int): Attend within non-overlapping windows of this many
            patches per side; the input then holds patch tokens only. 0 =
            global attention.
    """

    @classmethod
    def replace(cls, layer: TransformerEncoderLayer, window_size: int = 0,
                **attn_kwargs) -> 'MixedAEEncoderLayer':
        """Take over ``layer``'s norms and MLP, and its attention as a
        :class:`MixedAEAttention` (``attn_kwargs``): nothing changes but
        the forward."""
        new = cls.__new__(cls)
        BaseModule.__init__(new, init_cfg=layer.init_cfg)
        new.embed_dims = layer.embed_dims
        new.ln1 = layer.ln1
        new.attn = MixedAEAttention.replace(layer.attn, **attn_kwargs)
        new.ln2 = layer.ln2
        new.ffn = layer.ffn
        new.window_size = window_size
        return new

    def forward(self,
                x: Tensor,
                grid_hw: Optional[Tuple[int, int]] = None,
                top_k: Optional[int] = None
                ) -> Tuple[Tensor, Optional[Tensor]]:
        """
        Args:
            x: ``(S, L, D)`` tokens.
            grid_hw: patch grid of the sequences (relative position bias,
                windows).
            top_k: homologous attention with this ``k`` (pretraining).

        Returns:
            The layer output and, with ``top_k``, the selected keys
            ``(S, heads, N, k)`` (else ``None``).
        """
        y = self.ln1(x)
        topk_indices = None
        if top_k is not None:
            y, topk_indices = self.attn(y, top_k=top_k)
        elif self.window_size:
            windows, padded_hw = window_partition(y, grid_hw,
                                                  self.window_size)
            windows = self.attn(
                windows, grid_hw=(self.window_size, self.window_size))
            y = window_unpartition(windows, grid_hw, padded_hw,
                                   self.window_size)
        else:
            y = self.attn(y, grid_hw=grid_hw)
        x = x + y
        return self.ffn(self.ln2(x), identity=x), topk_indices
