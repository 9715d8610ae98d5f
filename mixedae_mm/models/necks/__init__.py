from .mixedae_neck import MixedAEPretrainDecoder

__all__ = ['MixedAEPretrainDecoder']
