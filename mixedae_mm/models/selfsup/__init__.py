from .mixedae import ABLATIONS, MixedAE

__all__ = ['ABLATIONS', 'MixedAE']
