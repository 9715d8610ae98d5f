"""The pretraining encoder: :class:`MixedAEViT` and its homologous
attention, one class per attention mode.

- mmpretrain's ``MultiheadAttention`` is the plain attention (what a
  transfer run, and ``extract_feat``, compute);
- :class:`HomologousAttention` subclasses it and overrides only ``forward``:
  with a ``top_k`` it attends to each patch query's top-k keys, without one
  it falls back to its parent;
- windowed attention and the relative position bias are transfer options:
  ``transfer.py``.

Homologous attention runs the fast path (``ops.topk_attention``: a C kernel
on the CPU, a fused kernel elsewhere) unless switched to the readable one
(``ops.topk_attention_reference``: select, mask, softmax, written out) with
``MIXEDAE_FAST_ATTN=0`` or :func:`set_fast_attn` before the model is built,
as timm's ``TIMM_FUSED_ATTN``; both give the same result (tests compare
them), the readable one with an ``(L, L)`` tensor kept for backward.
"""
import os
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint
from mmpretrain.models import VisionTransformer
from mmpretrain.models.backbones.vision_transformer import \
    TransformerEncoderLayer
from mmpretrain.models.utils import (MultiheadAttention,
                                     build_2d_sincos_position_embedding)
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from ... import ops
from .arch_zoo import ARCH_ZOO
from .layer_swap import rebuild_attention, take_over_layer
from .pretrained import StrictPretrainedMixin
from .transfer import TransferViTMixin

#: ``MIXEDAE_FAST_ATTN=0``: homologous attention built after this reads it
#: runs the readable path
_FAST_ATTN = os.environ.get('MIXEDAE_FAST_ATTN', '1') != '0'


def use_fast_attn() -> bool:
    """Whether newly built :class:`HomologousAttention` runs the fast path
    (default; ``MIXEDAE_FAST_ATTN=0`` or ``set_fast_attn(False)``: the
    readable one)."""
    return _FAST_ATTN


def set_fast_attn(enable: bool = True) -> None:
    """Switch the path of homologous attention built from now on."""
    global _FAST_ATTN
    _FAST_ATTN = bool(enable)


class HomologousAttention(MultiheadAttention):
    """mmpretrain ``MultiheadAttention`` that, given a ``top_k``, runs
    homologous attention: each patch query attends to the cls key and its
    ``top_k`` highest-scoring patch keys (``ops.topk_attention``).

    Args:
        fast_attn (bool, optional): Fast path (default: :func:`use_fast_attn`)
            or the readable one.
        Other arguments are those of ``MultiheadAttention``.
    """

    def __init__(self, embed_dims: int, num_heads: int,
                 fast_attn: Optional[bool] = None, **kwargs) -> None:
        super().__init__(embed_dims, num_heads, **kwargs)
        self.fast_attn = use_fast_attn() if fast_attn is None else fast_attn

    @classmethod
    def replace(cls, attn: MultiheadAttention, **kwargs):
        """A ``cls`` that takes over ``attn``'s sub-modules."""
        return rebuild_attention(cls, attn, **kwargs)

    def forward(self, x: Tensor, top_k: Optional[int] = None,
                selections: Optional[List[Tensor]] = None) -> Tensor:
        """``(S, L, C)`` -> ``(S, L, C)``; with ``top_k``, homologous
        attention, whose selected keys ``(S, heads, L - 1, top_k)`` are
        appended to ``selections``."""
        if top_k is None:
            return super().forward(x)
        num_seq, seq_len, _ = x.shape
        qkv = self.qkv(x).reshape(num_seq, seq_len, 3, self.num_heads,
                                  self.head_dims).permute(2, 0, 3, 1, 4)
        dropout_p = self.attn_drop if self.training else 0.
        out, topk_indices = self.attend(qkv[0], qkv[1], qkv[2], top_k,
                                        dropout_p)
        if selections is not None:
            selections.append(topk_indices)
        out = self.proj(out.transpose(1, 2).flatten(2))
        return self.out_drop(self.gamma1(self.proj_drop(out)))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, top_k: int,
               dropout_p: float) -> ops.TopKAttention:
        """``q, k, v (S, heads, L, d)``: each patch query over its
        ``top_k`` keys; the fast or the readable path."""
        attend = ops.topk_attention if self.fast_attn else \
            ops.topk_attention_reference
        return attend(q, k, v, top_k, dropout_p=dropout_p)


class MixedAEEncoderLayer(TransformerEncoderLayer):
    """mmpretrain's ``TransformerEncoderLayer`` with
    :class:`HomologousAttention`; its parameters and their names are the
    parent's. A whole layer is one call of :meth:`forward`, so activation
    checkpointing (``with_cp``) and FSDP wrap whole layers."""

    @classmethod
    def replace(cls, layer: TransformerEncoderLayer,
                **attn_kwargs) -> 'MixedAEEncoderLayer':
        """Take over ``layer``'s modules, its attention as a
        :class:`HomologousAttention` (``attn_kwargs``)."""
        return take_over_layer(
            cls, layer, HomologousAttention.replace(layer.attn,
                                                    **attn_kwargs))

    def forward(self, x: Tensor, top_k: Optional[int] = None,
                selections: Optional[List[Tensor]] = None) -> Tensor:
        """``(S, L, D)`` tokens -> ``(S, L, D)``; ``top_k`` and
        ``selections`` as :meth:`HomologousAttention.forward`."""
        x = x + self.attn(self.ln1(x), top_k, selections)
        return self.ffn(self.ln2(x), identity=x)


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


@MODELS.register_module()
class MixedAEViT(TransferViTMixin, StrictPretrainedMixin, VisionTransformer):
    """Vision Transformer for MixedAE pretraining, and the same ViT for
    fine-tuning and transfer.

    The parameters and their names are those of mmpretrain's
    ``VisionTransformer`` (plus ``segment_embed`` when the segment embedding
    is on the encoder side, and relative position tables when asked for), so
    a pretrained encoder loads into any mmpretrain ViT and back.

    Forward modes (``mask`` as in ``MAEViT``, but off by default so that
    classifiers, segmentors and detectors get the plain ViT):

    - ``mask=None``/``False``: plain ViT, no mixing, global attention (or
      windowed, with ``window_size``); outputs per ``out_indices`` and
      ``out_type``.
    - ``mask=True, mixing=True``: MixedAE. Groups of ``G`` consecutive images
      are mixed patch-wise into one sample and the layers in
      ``homo_attn_layers`` run top-k homologous attention. Returns a
      :class:`MixedEncoding`.
    - ``mask=True, mixing=False``: MAE. Random masking at ``mask_ratio``;
      returns ``(latent, mask, ids_restore)`` as ``MAEViT``.

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
        use_rel_pos_bias (bool): Per-layer relative position bias tables
            (zero-initialised; BEiT/MAE segmentation recipe). Transfer only.
        window_size (int): Windowed attention with windows of this many
            patches per side in every layer not in ``global_attn_indexes``
            (ViTDet recipe; the cls token is dropped). 0 = global attention.
        global_attn_indexes (Sequence[int]): Layers that keep global
            attention when ``window_size > 0``.
        with_cp (bool): Activation checkpointing of every encoder layer:
            keep only each layer's input for backward and recompute the
            layer there (less memory, about one more forward of compute).
        Other arguments are those of ``VisionTransformer`` (``frozen_stages``,
        ``layer_scale_init_value``, ``drop_path_rate``, ...).

    Pretrained weights: ``init_cfg=dict(type='Pretrained', checkpoint=...,
    prefix='backbone.')`` loads with ``torch.load(weights_only=True)`` and
    raises if a parameter the checkpoint should hold is missing or of
    another shape (only the tables and norms that transfer adds may be
    new).

    This file is the pretraining encoder; the plain forward, windows and
    relative position bias are in ``transfer.py``, verified loading in
    ``pretrained.py``, the sizes in ``arch_zoo.py``.
    """

    #: mmpretrain's ViT sizes plus the demo's and the study's (arch_zoo.py)
    arch_zoo = ARCH_ZOO

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
                 use_rel_pos_bias: bool = False,
                 window_size: int = 0,
                 global_attn_indexes: Sequence[int] = (),
                 with_cp: bool = False,
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
        self.with_cp = with_cp

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

        # transfer options (transfer.py): windowed attention (ViTDet), a
        # relative position bias; without them, the pretraining layers
        self._configure_windows(window_size, global_attn_indexes, out_type)
        self.use_rel_pos_bias = use_rel_pos_bias
        self.transfer = bool(window_size) or use_rel_pos_bias
        for i in range(self.num_layers):
            self.layers[i] = self._transfer_layer(
                i, window_size, use_rel_pos_bias) if self.transfer else \
                MixedAEEncoderLayer.replace(self.layers[i])

    # ------------------------------------------------------------------ init
    def init_weights(self) -> None:
        pretrained = self._pretrained_cfg()
        if pretrained is not None:
            self.load_pretrained(
                pretrained['checkpoint'], prefix=pretrained.get('prefix', ''))
            self._is_init = True
            return
        super().init_weights()
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

    # --------------------------------------------------------------- forward
    def _run_layer(self, layer: nn.Module, x: Tensor, *args) -> Tensor:
        """``layer(x, *args)``, checkpointed with ``with_cp``.

        The recomputation in backward selects the same top-k keys: the
        selection is a deterministic function of the recomputed q and k.
        """
        if self.with_cp and torch.is_grad_enabled() and x.requires_grad:
            return torch.utils.checkpoint.checkpoint(
                layer, x, *args, use_reentrant=False)
        return layer(x, *args)

    def forward(self,
                x: Tensor,
                mask: Optional[bool] = None,
                return_topk: bool = False):
        """The mode by ``mask`` (see the class docstring); MixedAE's
        training step calls :meth:`forward_mixed` itself."""
        if mask is None or mask is False:
            return self.forward_plain(x)
        self.check_pretraining()
        if self.mixing:
            return self.forward_mixed(x, return_topk=return_topk)
        return self.forward_masked(x)

    def check_pretraining(self) -> None:
        """Raise if the transfer options are on: they are not for
        pretraining (its layers are the transfer ones then)."""
        if self.transfer:
            raise ValueError('relative position bias and windowed attention '
                             'are transfer options; pretrain without them')

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
            x = self._run_layer(layer, x)
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

        selections = []  # each homologous layer appends its top-k keys
        for i, layer in enumerate(self.layers):
            top_k = self.top_k if i in self.homo_attn_layers else None
            x = self._run_layer(layer, x, top_k, selections)
        x = self.ln1(x)

        with torch.no_grad():
            accuracies = [ops.homologous_accuracy(indices, owner)
                          for indices in selections]
        homo_accuracy = torch.stack(accuracies) if accuracies else x.new_zeros(0)
        return MixedEncoding(x, owner, homo_accuracy,
                             tuple(selections) if return_topk else None)
