from .mixedae import ABLATIONS, MixedAE, Reconstruction

__all__ = ['ABLATIONS', 'MixedAE', 'Reconstruction']
