"""Pretraining attention of :class:`MixedAEViT`, one class per mode.

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
from typing import List, Optional

from mmengine.model import BaseModule
from mmpretrain.models.backbones.vision_transformer import \
    TransformerEncoderLayer
from mmpretrain.models.utils import MultiheadAttention
from torch import Tensor

from ... import ops

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


def take_over(new: MultiheadAttention, attn: MultiheadAttention):
    """Give ``new`` the sub-modules of ``attn`` (weights, dropouts, layer
    scale), so that nothing changes but the class; returns ``new``."""
    if attn.v_shortcut:
        raise ValueError(f'{type(new).__name__} does not support v_shortcut')
    for name in ('qkv', 'proj', 'proj_drop', 'out_drop', 'gamma1'):
        setattr(new, name, getattr(attn, name))
    new.scaled_dot_product_attention = attn.scaled_dot_product_attention
    return new


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


def rebuild_attention(cls, attn: MultiheadAttention, **kwargs):
    """A ``cls`` of ``attn``'s sizes that takes over its sub-modules."""
    return take_over(
        cls(attn.embed_dims, attn.num_heads,
            qkv_bias=attn.qkv.bias is not None, attn_drop=attn.attn_drop,
            **kwargs), attn)


def take_over_layer(cls, layer: TransformerEncoderLayer, attn):
    """A ``cls`` (a ``TransformerEncoderLayer``) with ``layer``'s norms and
    MLP and the attention ``attn``: parameters and their names unchanged."""
    new = cls.__new__(cls)
    BaseModule.__init__(new, init_cfg=layer.init_cfg)
    new.embed_dims = layer.embed_dims
    new.ln1 = layer.ln1
    new.attn = attn
    new.ln2 = layer.ln2
    new.ffn = layer.ffn
    return new


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
