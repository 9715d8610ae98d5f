from .ablations import ABLATIONS, build_mixedae, check_pretraining_config
from .mixedae import MAEAblation, MixedAE

__all__ = [
    'ABLATIONS', 'MAEAblation', 'MixedAE', 'build_mixedae',
    'check_pretraining_config'
]
