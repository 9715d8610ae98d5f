from .attention import HomologousAttention, MixedAEEncoderLayer
from .mixedae_vit import MixedAEViT, MixedEncoding
from .transfer import RelPosAttention, TransferEncoderLayer

__all__ = [
    'HomologousAttention', 'MixedAEEncoderLayer', 'MixedAEViT',
    'MixedEncoding', 'RelPosAttention', 'TransferEncoderLayer'
]
