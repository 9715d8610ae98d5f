from .mixedae_vit import (HomologousAttention, MixedAEEncoderLayer,
                          MixedAEViT, MixedEncoding, set_fast_attn,
                          use_fast_attn)
from .transfer import RelPosAttention, TransferEncoderLayer

__all__ = [
    'HomologousAttention', 'MixedAEEncoderLayer', 'MixedAEViT',
    'MixedEncoding', 'RelPosAttention', 'TransferEncoderLayer',
    'set_fast_attn', 'use_fast_attn'
]
