import torch
import torch.utils.checkpoint
from mmpretrain.models import MAEPretrainDecoder
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from ... import ops


@MODELS.register_module()
class MixedAEPretrainDecoder(MAEPretrainDecoder):
    """MAE decoder that first un-mixes MixedAE's encoded samples.

    Every source image gets its own decoder sequence: its encoded tokens at
    the positions it owns, the shared mask token elsewhere, the cls token of
    its mixed sample, the decoder position embedding and (optionally) the
    embedding of its group slot. Decoder cost per step is then ``B * (N + 1)``
    tokens, the same as MAE's.

    :meth:`forward_masked` is exactly ``MAEPretrainDecoder`` (the
    ``mixing=False`` ablation).

    Args:
        group_size (int): ``G``, images per mixed sample.
        segment_embed (bool): Add a learnable embedding of the group slot to
            every token of the un-mixed sequences (the default
            ``segment_embed='decoder'`` choice).
        with_cp (bool): Activation checkpointing of every decoder block
            (MixedAE and the MAE ablation alike).
        Other arguments are those of ``MAEPretrainDecoder``;
        ``num_patches``/``embed_dim``/``patch_size`` are filled in from the
        backbone by :class:`MixedAE`.
    """

    def __init__(self,
                 group_size: int = 4,
                 segment_embed: bool = True,
                 with_cp: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.group_size = group_size
        self.with_cp = with_cp
        decoder_dim = self.mask_token.shape[-1]
        self.segment_embed = nn.Parameter(
            torch.zeros(group_size, decoder_dim)) if segment_embed else None

    def init_weights(self) -> None:
        super().init_weights()
        if self.segment_embed is not None:
            nn.init.normal_(self.segment_embed, std=.02)

    def forward(self, x: Tensor, owner: Tensor) -> Tensor:
        """Predict pixels of every source image of the mixed samples.

        Args:
            x: ``(M, N + 1, D)`` encoded mixed samples.
            owner: ``(M, N)`` partition.

        Returns:
            ``(B, N, p * p * C)`` pixel predictions (cls removed).
        """
        num_mixed = x.shape[0]
        # Project before un-mixing: M rows instead of B.
        x = self.decoder_embed(x)
        patches = ops.unmix_tokens(x[:, 1:], owner, self.mask_token.view(-1),
                                   self.group_size)
        cls_tokens = x[:, :1].repeat_interleave(self.group_size, dim=0)
        x = torch.cat((cls_tokens, patches), dim=1) + self.decoder_pos_embed
        if self.segment_embed is not None:
            # row b = m * G + g gets the embedding of slot g
            x = x + self.segment_embed.repeat(num_mixed, 1).unsqueeze(1)
        return self.decode(x)

    def forward_masked(self, x: Tensor, ids_restore: Tensor) -> Tensor:
        """MAE (the ``mixing=False`` ablation), as ``MAEPretrainDecoder``:
        the visible tokens ``(B, 1 + N_keep, D)`` back in image order with
        mask tokens at the masked positions (``ids_restore (B, N)``), then
        the decoder -> ``(B, N, p * p * C)``."""
        x = self.decoder_embed(x)
        batch, num_visible, dims = x.shape[0], x.shape[1] - 1, x.shape[2]
        num_masked = ids_restore.shape[1] - num_visible
        shuffled = torch.cat(
            (x[:, 1:], self.mask_token.expand(batch, num_masked, dims)),
            dim=1)
        patches = shuffled.gather(
            1, ids_restore.unsqueeze(-1).expand(-1, -1, dims))
        return self.decode(
            torch.cat((x[:, :1], patches), dim=1) + self.decoder_pos_embed)

    def decode(self, x: Tensor) -> Tensor:
        """Decoder blocks, norm and pixel projection on full sequences
        ``(B, N + 1, D_dec)`` -> ``(B, N, p * p * C)``."""
        checkpointed = self.with_cp and torch.is_grad_enabled() \
            and x.requires_grad
        for block in self.decoder_blocks:
            if checkpointed:
                x = torch.utils.checkpoint.checkpoint(
                    block, x, use_reentrant=False)
            else:
                x = block(x)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, 1:]
