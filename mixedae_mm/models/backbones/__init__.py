from .mixedae_vit import MixedAEViT, MixedEncoding

__all__ = ['MixedAEViT', 'MixedEncoding']
