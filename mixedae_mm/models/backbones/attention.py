"""Attention of :class:`MixedAEViT`: one module for every mode.

``MixedAEAttention`` keeps mmpretrain ``MultiheadAttention``'s parameters
(``qkv``, ``proj``, ``gamma1``) so checkpoints keep their keys, and adds:

- top-k homologous attention (pretraining; see ``ops.topk_attention``);
- an optional relative position bias table (BEiT/MAE segmentation recipe;
  zero-initialised, so it starts as plain attention);
- windowed attention helpers (ViTDet recipe), applied by the encoder layer.
"""
import functools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmpretrain.models.utils import MultiheadAttention
from torch import Tensor, nn

from ... import ops


@functools.lru_cache(maxsize=16)
def relative_position_index(height: int, width: int, with_cls: bool,
                            device: Optional[torch.device] = None) -> Tensor:
    """Index into a relative position table, BEiT style.

    Patch pairs index ``(2h-1)(2w-1)`` relative offsets; with a cls token
    three more entries hold cls->patch, patch->cls and cls->cls.

    Built once per (grid, cls, device) and shared by every layer: for the
    detector's 64x64 global blocks a fresh index cost half a second per call.
    The result is cached, so it must not be modified in place.

    Returns:
        ``(L, L)`` long on ``device``, ``L = h*w (+1 with cls)``.
    """
    # a cached index first built under inference_mode could not be saved for
    # a later backward pass
    with torch.inference_mode(False):
        return _build_relative_position_index(height, width, with_cls, device)


def _build_relative_position_index(height: int, width: int, with_cls: bool,
                                   device: Optional[torch.device]) -> Tensor:
    coords = torch.stack(
        torch.meshgrid(
            torch.arange(height, device=device),
            torch.arange(width, device=device),
            indexing='ij')).flatten(1)
    relative = coords[:, :, None] - coords[:, None, :]
    index = (relative[0] + height - 1) * (2 * width - 1) + (relative[1] +
                                                             width - 1)
    if not with_cls:
        return index
    num_distances = (2 * height - 1) * (2 * width - 1)
    full = torch.empty(height * width + 1, height * width + 1,
                       dtype=torch.long, device=device)
    full[1:, 1:] = index
    full[0, 1:] = num_distances
    full[1:, 0] = num_distances + 1
    full[0, 0] = num_distances + 2
    return full


def resize_relative_table(table: Tensor, src_hw: Tuple[int, int],
                          dst_hw: Tuple[int, int], num_extra: int) -> Tensor:
    """Bilinearly resize the ``(2h-1)(2w-1)`` part of a table to a new grid.

    Args:
        table: ``((2h-1)(2w-1) + num_extra, heads)``.
    """
    if tuple(src_hw) == tuple(dst_hw):
        return table
    heads = table.shape[1]
    src = table[:table.shape[0] - num_extra] if num_extra else table
    src = src.T.reshape(1, heads, 2 * src_hw[0] - 1, 2 * src_hw[1] - 1)
    dst = F.interpolate(
        src, size=(2 * dst_hw[0] - 1, 2 * dst_hw[1] - 1),
        mode='bilinear', align_corners=False)
    dst = dst.reshape(heads, -1).T
    if num_extra:
        dst = torch.cat((dst, table[-num_extra:]), dim=0)
    return dst


def window_partition(x: Tensor, grid_hw: Tuple[int, int],
                     window: int) -> Tuple[Tensor, Tuple[int, int]]:
    """``(B, h*w, C)`` patch tokens -> ``(B * nW, window^2, C)`` windows.

    The grid is zero-padded to a multiple of ``window`` (as ViTDet).
    Returns the windows and the padded grid size.
    """
    batch, _, channels = x.shape
    height, width = grid_hw
    x = x.view(batch, height, width, channels)
    pad_h, pad_w = (-height) % window, (-width) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = height + pad_h, width + pad_w
    x = x.view(batch, hp // window, window, wp // window, window, channels)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window,
                                                   channels)
    return windows, (hp, wp)


def window_unpartition(windows: Tensor, grid_hw: Tuple[int, int],
                       padded_hw: Tuple[int, int], window: int) -> Tensor:
    """Inverse of :func:`window_partition`: back to ``(B, h*w, C)``."""
    hp, wp = padded_hw
    channels = windows.shape[-1]
    batch = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(batch, hp // window, wp // window, window, window,
                     channels)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, hp, wp, channels)
    height, width = grid_hw
    return x[:, :height, :width].reshape(batch, height * width, channels)


class MixedAEAttention(MultiheadAttention):
    """mmpretrain ``MultiheadAttention`` + top-k and relative position bias.

    Args:
        rel_pos_grid (tuple, optional): Grid ``(h, w)`` the relative position
            table is built for; ``None`` = no relative position bias. Other
            grids interpolate the table.
        with_cls (bool): The sequences start with a cls token (the table then
            has three extra entries for it).
        Other arguments are those of ``MultiheadAttention``.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 rel_pos_grid: Optional[Tuple[int, int]] = None,
                 with_cls: bool = True,
                 **kwargs) -> None:
        super().__init__(embed_dims, num_heads, **kwargs)
        if self.v_shortcut:
            raise ValueError('MixedAEAttention does not support v_shortcut')
        self.rel_pos_grid = tuple(rel_pos_grid) if rel_pos_grid else None
        self.with_cls = with_cls
        if self.rel_pos_grid:
            height, width = self.rel_pos_grid
            extra = 3 if with_cls else 0
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * height - 1) * (2 * width - 1) + extra,
                            num_heads))
        else:
            self.relative_position_bias_table = None

    @classmethod
    def replace(cls, attn: MultiheadAttention, **kwargs) -> 'MixedAEAttention':
        """A ``MixedAEAttention`` that takes over ``attn``'s sub-modules
        (weights, dropouts, layer scale), so nothing changes but the
        forward."""
        new = cls(
            attn.embed_dims,
            attn.num_heads,
            qkv_bias=attn.qkv.bias is not None,
            attn_drop=attn.attn_drop,
            **kwargs)
        for name in ('qkv', 'proj', 'proj_drop', 'out_drop', 'gamma1'):
            setattr(new, name, getattr(attn, name))
        new.scaled_dot_product_attention = attn.scaled_dot_product_attention
        return new

    def relative_position_bias(self, grid_hw: Tuple[int, int]) -> Tensor:
        """``(heads, L, L)`` bias for sequences on ``grid_hw``."""
        extra = 3 if self.with_cls else 0
        table = resize_relative_table(self.relative_position_bias_table,
                                      self.rel_pos_grid, grid_hw, extra)
        index = relative_position_index(*grid_hw, self.with_cls,
                                        table.device)
        return table[index.view(-1)].view(*index.shape, -1).permute(2, 0, 1)

    def _qkv(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        num_seq, seq_len, _ = x.shape
        qkv = self.qkv(x).reshape(num_seq, seq_len, 3, self.num_heads,
                                  self.head_dims).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def _project(self, out: Tensor) -> Tensor:
        """``(S, heads, L, d)`` -> ``(S, L, C)`` through proj and drops."""
        out = out.transpose(1, 2).flatten(2)
        return self.out_drop(self.gamma1(self.proj_drop(self.proj(out))))

    def forward(self,
                x: Tensor,
                grid_hw: Optional[Tuple[int, int]] = None,
                top_k: Optional[int] = None):
        """Global (or, on window sequences, windowed) attention over ``x``
        ``(S, L, C)``; ``grid_hw`` is the patch grid of the sequences, needed
        with the relative position bias.

        With ``top_k``: homologous attention (:meth:`forward_topk`),
        returning the output and the selected keys.
        """
        if top_k is not None:
            return self.forward_topk(x, top_k)
        q, k, v = self._qkv(x)
        dropout_p = self.attn_drop if self.training else 0.
        if self.relative_position_bias_table is None:
            out = self.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout_p)
        else:
            if grid_hw is None:
                raise ValueError('relative position bias needs grid_hw')
            bias = self.relative_position_bias(grid_hw).to(q.dtype)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias.unsqueeze(0), dropout_p=dropout_p)
        return self._project(out)

    def forward_topk(self, x: Tensor, top_k: int) -> Tuple[Tensor, Tensor]:
        """Homologous attention: patch queries keep the cls key and their
        ``top_k`` highest-scoring patch keys.

        Returns the output ``(S, L, C)`` and the selected keys
        ``(S, heads, L - 1, top_k)``.
        """
        if self.relative_position_bias_table is not None:
            raise ValueError('homologous attention is a pretraining mode; '
                             'relative position bias is for transfer')
        q, k, v = self._qkv(x)
        dropout_p = self.attn_drop if self.training else 0.
        out, topk_indices = ops.topk_attention(
            q, k, v, top_k, dropout_p=dropout_p)
        return self._project(out), topk_indices
