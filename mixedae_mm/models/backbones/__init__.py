from .encoder_layer import MixedAEEncoderLayer
from .mixedae_vit import MixedAEViT, MixedEncoding

__all__ = ['MixedAEEncoderLayer', 'MixedAEViT', 'MixedEncoding']
