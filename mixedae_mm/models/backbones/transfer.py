"""What transfer adds to :class:`MixedAEViT`: windowed attention (ViTDet
recipe), a relative position bias (BEiT/MAE segmentation recipe) and the
plain forward of fine-tuning, segmentation and detection.

Pretraining never runs this code: ``MixedAEViT`` builds
:class:`TransferEncoderLayer` layers only when ``window_size`` or
``use_rel_pos_bias`` asks for them, and pretraining refuses those options.
"""
import functools
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmpretrain.models.backbones.vision_transformer import \
    TransformerEncoderLayer
from mmpretrain.models.utils import MultiheadAttention, resize_pos_embed
from torch import Tensor, nn

from .layer_swap import rebuild_attention, take_over_layer


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


class RelPosAttention(MultiheadAttention):
    """mmpretrain ``MultiheadAttention`` plus an optional relative position
    bias table (zero-initialised, so it starts as plain attention).

    Args:
        rel_pos_grid (tuple, optional): Grid ``(h, w)`` the relative position
            table is built for; ``None`` = no relative position bias (the
            parent's forward). Other grids interpolate the table.
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
    def replace(cls, attn: MultiheadAttention, **kwargs):
        """A ``RelPosAttention`` that takes over ``attn``'s sub-modules."""
        return rebuild_attention(cls, attn, **kwargs)

    def relative_position_bias(self, grid_hw: Tuple[int, int]) -> Tensor:
        """``(heads, L, L)`` bias for sequences on ``grid_hw``."""
        extra = 3 if self.with_cls else 0
        table = resize_relative_table(self.relative_position_bias_table,
                                      self.rel_pos_grid, grid_hw, extra)
        index = relative_position_index(*grid_hw, self.with_cls,
                                        table.device)
        return table[index.view(-1)].view(*index.shape, -1).permute(2, 0, 1)

    def forward(self, x: Tensor, grid_hw: Tuple[int, int]) -> Tensor:
        """Attention over ``x`` ``(S, L, C)``, sequences on the patch grid
        ``grid_hw`` (a window, or the whole grid)."""
        if self.relative_position_bias_table is None:
            return super().forward(x)
        num_seq, seq_len, _ = x.shape
        q, k, v = self.qkv(x).reshape(num_seq, seq_len, 3, self.num_heads,
                                      self.head_dims).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias(grid_hw).to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.unsqueeze(0),
            dropout_p=self.attn_drop if self.training else 0.)
        out = self.proj(out.transpose(1, 2).flatten(2))
        return self.out_drop(self.gamma1(self.proj_drop(out)))


class TransferEncoderLayer(TransformerEncoderLayer):
    """mmpretrain's ``TransformerEncoderLayer`` with windowed attention
    (``window_size`` patches per side; the input then holds patch tokens
    only; 0 = global) and :class:`RelPosAttention`. Its parameters and their
    names are the parent's (plus the bias table)."""

    @classmethod
    def replace(cls, layer: TransformerEncoderLayer, window_size: int = 0,
                **attn_kwargs) -> 'TransferEncoderLayer':
        """Take over ``layer``'s modules, its attention as a
        :class:`RelPosAttention` (``attn_kwargs``)."""
        new = take_over_layer(
            cls, layer, RelPosAttention.replace(layer.attn, **attn_kwargs))
        new.window_size = window_size
        return new

    def forward(self, x: Tensor, grid_hw: Tuple[int, int]) -> Tensor:
        """``(S, L, D)`` tokens on the patch grid ``grid_hw`` ->
        ``(S, L, D)``."""
        y = self.ln1(x)
        if self.window_size:
            window = self.window_size
            windows, padded_hw = window_partition(y, grid_hw, window)
            windows = self.attn(windows, (window, window))
            y = window_unpartition(windows, grid_hw, padded_hw, window)
        else:
            y = self.attn(y, grid_hw)
        x = x + y
        return self.ffn(self.ln2(x), identity=x)


class TransferViTMixin:
    """The plain forward of :class:`MixedAEViT` (fine-tuning and transfer:
    no mixing, no top-k; windows and relative position bias when asked
    for)."""

    def _configure_windows(self, window_size: int,
                           global_attn_indexes: Sequence[int],
                           out_type: str) -> None:
        """``self.window_sizes``: per layer, the window (``window_size``
        patches per side in every layer not in ``global_attn_indexes``) or
        0 (global attention)."""
        if window_size < 0:
            raise ValueError(f'window_size must be >= 0, got {window_size}')
        if window_size and out_type == 'cls_token':
            raise ValueError("windowed attention drops the cls token: use "
                             "out_type 'featmap' or 'avg_featmap'")
        global_layers = {i % self.num_layers for i in global_attn_indexes}
        self.window_sizes = [
            0 if i in global_layers else window_size
            for i in range(self.num_layers)
        ]

    def _transfer_layer(self, index: int, window_size: int,
                        use_rel_pos_bias: bool) -> TransferEncoderLayer:
        """Layer ``index`` as a :class:`TransferEncoderLayer`: its window,
        a relative position table for its window or the whole grid (with
        cls entries unless ``window_size`` drops the cls token)."""
        window = self.window_sizes[index]
        rel_pos_grid = None
        if use_rel_pos_bias:
            rel_pos_grid = (window, window) if window else \
                self.patch_resolution
        return TransferEncoderLayer.replace(
            self.layers[index],
            window_size=window,
            rel_pos_grid=rel_pos_grid,
            with_cls=not window_size)

    def forward_plain(self, x: Tensor) -> Tuple[Tensor, ...]:
        """The ViT of fine-tuning and transfer: no mixing, no top-k.

        Any input size: position embeddings are resized to the patch grid.
        """
        batch = x.shape[0]
        x, grid_hw = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(batch, -1, -1), x), dim=1)
        x = x + resize_pos_embed(
            self.pos_embed,
            self.patch_resolution,
            grid_hw,
            mode=self.interpolate_mode,
            num_extra_tokens=self.num_extra_tokens)
        x = self.pre_norm(self.drop_after_pos(x))
        windowed = any(self.window_sizes)
        if windowed:
            x = x[:, self.num_extra_tokens:]
        # transfer layers attend on the patch grid (windows, bias tables)
        layer_args = (grid_hw, ) if self.transfer else ()

        outs = []
        for i, layer in enumerate(self.layers):
            x = self._run_layer(layer, x, *layer_args)
            if i == len(self.layers) - 1 and self.final_norm:
                x = self.ln1(x)
            if i in self.out_indices:
                outs.append(self._format(x, grid_hw, has_cls=not windowed))
        return tuple(outs)

    def _format(self, x: Tensor, grid_hw, has_cls: bool) -> Tensor:
        if has_cls:
            return self._format_output(x, grid_hw)
        if self.out_type == 'raw':
            return x
        if self.out_type == 'featmap':
            return x.reshape(x.shape[0], *grid_hw, -1).permute(0, 3, 1, 2)
        return self.ln2(x.mean(dim=1))  # avg_featmap
