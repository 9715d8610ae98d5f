from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from mmpretrain.models import VisionTransformer
from mmpretrain.models.backbones.vision_transformer import \
    TransformerEncoderLayer
from mmpretrain.models.utils import build_2d_sincos_position_embedding
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from ... import ops


class MixedEncoding(NamedTuple):
    """What :class:`MixedAEViT` returns in mixed pretraining.

    tokens: ``(M, N + 1, D)`` encoded mixed samples, cls first, after the
        final norm.
    owner: ``(M, N)`` source slot of every position (see :mod:`ops`).
    homo_accuracy: ``(num_homo_layers,)`` fraction of top-k selected keys
        that are homologous, per homologous-attention layer (empty when the
        encoder runs plain attention).
    topk_indices: per homologous layer ``(M, h, N, K)`` selected patch keys,
        only when asked for with ``return_topk=True`` (kept for
        visualisation; they cost memory), else ``None``.
    """
    tokens: Tensor
    owner: Tensor
    homo_accuracy: Tensor
    topk_indices: Optional[Tuple[Tensor, ...]] = None


def homologous_layer_forward(layer: TransformerEncoderLayer, x: Tensor,
                             top_k: int) -> Tuple[Tensor, Tensor]:
    """``TransformerEncoderLayer.forward`` with top-k homologous attention.

    Runs on the layer's own parameters, so the module tree (and every
    checkpoint key) stays that of mmpretrain's ``VisionTransformer``.

    Returns the layer output ``(M, L, D)`` and the top-k indices
    ``(M, h, N, K)``.
    """
    attn = layer.attn
    y = layer.ln1(x)
    num_seq, seq_len, _ = y.shape
    qkv = attn.qkv(y).reshape(num_seq, seq_len, 3, attn.num_heads,
                              attn.head_dims).permute(2, 0, 3, 1, 4)
    result = ops.topk_attention(
        qkv[0], qkv[1], qkv[2], top_k,
        dropout_p=attn.attn_drop if attn.training else 0.)
    y = result.out.transpose(1, 2).reshape(num_seq, seq_len, attn.embed_dims)
    y = attn.out_drop(attn.gamma1(attn.proj_drop(attn.proj(y))))
    x = x + y
    x = layer.ffn(layer.ln2(x), identity=x)
    return x, result.topk_indices


@MODELS.register_module()
class MixedAEViT(VisionTransformer):
    """Vision Transformer for MixedAE pretraining; a plain ViT otherwise.

    The parameters and their names are those of mmpretrain's
    ``VisionTransformer`` (plus ``segment_embed`` when the segment embedding
    is on the encoder side), so a pretrained encoder loads into any
    mmpretrain ViT and back.

    Three forward modes (the ``mask`` argument follows ``MAEViT``):

    - ``mask=None``/``False``: plain ViT (``VisionTransformer.forward``),
      global attention, no mixing; used by ``extract_feat``, fine-tuning and
      transfer.
    - ``mask=True, mixing=True``: MixedAE. Groups of ``G`` consecutive images
      are mixed patch-wise into one sample, and the layers in
      ``homo_attn_layers`` run top-k homologous attention. Returns a
      :class:`MixedEncoding`.
    - ``mask=True, mixing=False``: MAE. Random masking at ``mask_ratio``,
      returns ``(latent, mask, ids_restore)`` exactly as ``MAEViT``.

    Args:
        mixing (bool): Mix images (MixedAE) or mask them (MAE ablation).
        mixing_ratio (float): ``r``; the group size is ``G = 1 / r``.
        homo_attn_layers (Sequence[int], optional): Layers that run
            homologous attention; negative indices count from the end.
            ``None`` means all layers, ``[]`` none (naive mixing).
        segment_embed (bool): Add a learnable per-slot embedding to the mixed
            patch tokens (the ``segment_embed='encoder'`` choice).
        mask_ratio (float): MAE masking ratio when ``mixing=False``.
        fix_pos_embed (bool): Keep the sin-cos position embedding frozen, as
            in MAE pretraining. Set False to fine-tune it.
        Other arguments are those of ``VisionTransformer``.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'b',
                 img_size: int = 224,
                 patch_size: int = 16,
                 out_indices: Union[Sequence[int], int] = -1,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 final_norm: bool = True,
                 out_type: str = 'raw',
                 mixing: bool = True,
                 mixing_ratio: float = 0.25,
                 homo_attn_layers: Optional[Sequence[int]] = None,
                 segment_embed: bool = False,
                 mask_ratio: float = 0.75,
                 fix_pos_embed: bool = True,
                 init_cfg: Optional[Union[List[dict], dict]] = None,
                 **kwargs) -> None:
        super().__init__(
            arch=arch,
            img_size=img_size,
            patch_size=patch_size,
            out_indices=out_indices,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            norm_cfg=norm_cfg,
            final_norm=final_norm,
            out_type=out_type,
            with_cls_token=True,
            init_cfg=init_cfg,
            **kwargs)
        self.patch_size = patch_size
        self.num_patches = self.patch_resolution[0] * self.patch_resolution[1]
        self.mixing = mixing
        self.mask_ratio = mask_ratio

        group_size = round(1 / mixing_ratio)
        if abs(group_size * mixing_ratio - 1) > 1e-6:
            raise ValueError(f'mixing_ratio must be 1/G for an integer group '
                             f'size G, got {mixing_ratio}')
        self.group_size = group_size
        if mixing:
            ops.check_mixing_shapes(group_size, self.num_patches, group_size)
            if not final_norm:
                raise ValueError('MixedAE pretraining needs final_norm=True: '
                                 'the contrastive loss reads normed tokens.')
        self.top_k = self.num_patches // group_size

        if homo_attn_layers is None:
            homo_attn_layers = range(self.num_layers)
        self.homo_attn_layers = sorted(
            {i % self.num_layers
             for i in homo_attn_layers})

        self.segment_embed = nn.Parameter(
            torch.zeros(group_size, self.embed_dims)) if segment_embed else None

        if fix_pos_embed:
            self.pos_embed.requires_grad = False

    def init_weights(self) -> None:
        super().init_weights()
        if isinstance(self.init_cfg, dict) and \
                self.init_cfg.get('type') == 'Pretrained':
            return
        # MAE's initialisation: fixed 2-D sin-cos positions, the patch
        # embedding initialised like a linear layer.
        pos_embed = build_2d_sincos_position_embedding(
            self.patch_resolution,
            self.pos_embed.shape[-1],
            cls_token=True)
        self.pos_embed.data.copy_(pos_embed.float())
        w = self.patch_embed.projection.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.normal_(self.cls_token, std=.02)
        if self.segment_embed is not None:
            nn.init.normal_(self.segment_embed, std=.02)

    def forward(self,
                x: Tensor,
                mask: Optional[bool] = True,
                return_topk: bool = False):
        if mask is None or mask is False:
            return super().forward(x)
        if self.mixing:
            return self.forward_mixed(x, return_topk=return_topk)
        return self.forward_masked(x)

    def _check_input_size(self, x: Tensor) -> None:
        if x.shape[-2:] != self.img_size:
            raise ValueError(
                f'pretraining input must be {self.img_size[0]}x'
                f'{self.img_size[1]} (the backbone img_size), got '
                f'{tuple(x.shape[-2:])}: fix the crop size in the pipeline')

    def _embed_patches(self, x: Tensor) -> Tensor:
        return self.patch_embed(x)[0] + self.pos_embed[:, 1:]

    def _prepend_cls(self, x: Tensor) -> Tensor:
        cls_token = self.cls_token + self.pos_embed[:, :1]
        return torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)

    def forward_masked(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """MAE: encode a random ``1 - mask_ratio`` of each image's patches.

        Returns ``latent (B, N_keep + 1, D)``, ``mask (B, N)`` (1 = masked)
        and ``ids_restore (B, N)``, as ``MAEViT``.
        """
        self._check_input_size(x)
        x = self._embed_patches(x)
        ids_keep, mask, ids_restore = ops.random_masking(
            x.shape[0], self.num_patches, self.mask_ratio, device=x.device)
        x = x.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = self._prepend_cls(x)
        for layer in self.layers:
            x = layer(x)
        return self.ln1(x), mask, ids_restore

    def forward_mixed(self, x: Tensor,
                      return_topk: bool = False) -> MixedEncoding:
        """MixedAE: mix groups of ``G`` images, encode with homologous
        attention.

        Args:
            x: ``(B, C, H, W)`` with ``B`` a multiple of ``G``.
        """
        self._check_input_size(x)
        batch_size = x.shape[0]
        ops.check_mixing_shapes(batch_size, self.num_patches, self.group_size)
        owner = ops.sample_partition(batch_size // self.group_size,
                                     self.num_patches, self.group_size,
                                     device=x.device)
        # Mixing pixels before the (kernel == stride) patch embedding equals
        # mixing embedded tokens, and embeds B/G images instead of B.
        x = self._embed_patches(ops.mix_images(x, owner, self.patch_size))
        if self.segment_embed is not None:
            x = x + self.segment_embed[owner]
        x = self._prepend_cls(x)

        accuracies, topk_indices = [], []
        for i, layer in enumerate(self.layers):
            if i in self.homo_attn_layers:
                x, indices = homologous_layer_forward(layer, x, self.top_k)
                with torch.no_grad():
                    accuracies.append(ops.homologous_accuracy(indices, owner))
                if return_topk:
                    topk_indices.append(indices)
            else:
                x = layer(x)
        x = self.ln1(x)

        homo_accuracy = torch.stack(accuracies) if accuracies else x.new_zeros(0)
        return MixedEncoding(x, owner, homo_accuracy,
                             tuple(topk_indices) if return_topk else None)
