"""Swap the class of an attention module or an encoder layer and keep its
parameters: the pretraining encoder (``mixedae_vit.py``) and the transfer
layers (``transfer.py``) take over the sub-modules of the layers
mmpretrain's ``VisionTransformer`` built, so every parameter keeps its name
and a checkpoint loads into either."""
from mmengine.model import BaseModule
from mmpretrain.models.backbones.vision_transformer import \
    TransformerEncoderLayer
from mmpretrain.models.utils import MultiheadAttention


def take_over(new: MultiheadAttention, attn: MultiheadAttention):
    """Give ``new`` the sub-modules of ``attn`` (weights, dropouts, layer
    scale), so that nothing changes but the class; returns ``new``."""
    if attn.v_shortcut:
        raise ValueError(f'{type(new).__name__} does not support v_shortcut')
    for name in ('qkv', 'proj', 'proj_drop', 'out_drop', 'gamma1'):
        setattr(new, name, getattr(attn, name))
    new.scaled_dot_product_attention = attn.scaled_dot_product_attention
    return new


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
