"""The paper's ablations as configuration, resolved where a config becomes
a model.

``type='MixedAE'`` in a config builds through :func:`build_mixedae` (the
registered name), which turns ``ablation`` and ``segment_embed`` into the
settings of the backbone, decoder and head they stand for, fills in the
shapes the decoder and head take from the backbone, and constructs
:class:`MixedAE` (or :class:`MAEAblation`) from the resolved parts. The
model classes get explicit parts; nothing in them rewrites a config.
"""
import copy
import inspect
from typing import Optional

from mmpretrain.registry import MODELS

from .mixedae import MAEAblation, MixedAE

#: ``ablation`` presets: the paper's ablations, one config line each. A
#: preset replaces the values a config states at their defaults; a different
#: value next to it is a contradiction (see :func:`_apply_preset`).
ABLATIONS = {
    # MixedAE as specified: mixing, homologous attention, contrastive loss.
    'none': dict(),
    # random masking instead of mixing, same encoder/decoder: MAE (no groups,
    # so no group slots to embed, and no unused parameter for DDP)
    'mae': dict(model=dict(segment_embed='none'),
                backbone=dict(mixing=False, homo_attn_layers=[])),
    # mix and reconstruct, nothing else
    'naive_mixing': dict(
        backbone=dict(homo_attn_layers=[]), head=dict(homo_loss_weight=0.)),
    # mixing + homologous attention, no contrastive loss
    'homo_attn_only': dict(head=dict(homo_loss_weight=0.)),
}
SEGMENT_EMBED_CHOICES = ('decoder', 'encoder', 'none')


def check_pretraining_config(model: dict, batch_size: Optional[int]) -> None:
    """Raise a one-line ``ValueError`` naming the setting to change where
    a MixedAE config would fail only once built or trained: an unknown
    ``model.ablation`` / ``model.segment_embed``, or a per-GPU
    ``train_dataloader.batch_size`` that does not split into mixing groups.
    ``model`` is the config's ``model`` dict (anything but MixedAE passes);
    nothing is built."""
    if str(model.get('type', '')).split('.')[-1] != 'MixedAE':
        return
    ablation = model.get('ablation', 'none')
    if ablation not in ABLATIONS:
        raise ValueError(f'model.ablation must be one of '
                         f'{sorted(ABLATIONS)}, got {ablation!r}')
    segment_embed = model.get('segment_embed', 'decoder')
    if segment_embed not in SEGMENT_EMBED_CHOICES:
        raise ValueError(f'model.segment_embed must be one of '
                         f'{SEGMENT_EMBED_CHOICES}, got {segment_embed!r}')
    backbone = dict(model.get('backbone') or {})
    backbone.update(ABLATIONS[ablation].get('backbone', {}))
    ratio = backbone.get('mixing_ratio', 0.25)
    if not backbone.get('mixing', True) or not ratio or batch_size is None:
        return  # no mixing (the MAE ablation), or the backbone says why
    group_size = round(1 / ratio)
    if batch_size % group_size:
        raise ValueError(
            f'train_dataloader.batch_size={batch_size} cannot be mixed: '
            f'MixedAE mixes groups of {group_size} images; use a per-GPU '
            f'batch size that is a multiple of {group_size}')


def _set(cfg: dict, key: str, value, reason: str) -> None:
    """Fill ``cfg[key]``; a different value set by hand is an error."""
    if key in cfg and cfg[key] != value:
        raise ValueError(
            f"{_type_name(cfg)}.{key}={cfg[key]!r} contradicts "
            f'{reason} (which needs {value!r}); remove it from the config')
    cfg[key] = value


def _type_name(cfg: dict) -> str:
    module_type = cfg.get('type', 'module')
    return getattr(module_type, '__name__', module_type)


def constructor_default(module_type, key: str):
    """Default of argument ``key`` of the registered ``module_type`` (a name
    or a class); ``inspect.Parameter.empty`` when it has none."""
    cls = MODELS.get(module_type) if isinstance(module_type, str) \
        else module_type
    if cls is None:
        return inspect.Parameter.empty
    param = inspect.signature(cls).parameters.get(key)
    return inspect.Parameter.empty if param is None else param.default


def _apply_preset(cfg: dict, key: str, value, ablation: str) -> None:
    """Set ``cfg[key]`` for an ablation preset.

    Recipes state their defaults (the base model config spells out lambda and
    the homologous layers), so a stated value equal to the module's default
    is the recipe's, not a choice, and the preset replaces it. Any other
    value differing from the preset was chosen next to the preset: an error.
    """
    stated = cfg.get(key, value)
    default = constructor_default(cfg.get('type'), key)
    if stated != value and stated != default:
        raise ValueError(
            f'{_type_name(cfg)}.{key}={stated!r} contradicts '
            f'ablation={ablation!r}, which sets {value!r}: remove {key} from '
            f'the config (or drop the ablation)')
    cfg[key] = value


@MODELS.register_module(name='MixedAE')
def build_mixedae(backbone: dict,
                  neck: dict,
                  head: dict,
                  segment_embed: str = 'decoder',
                  ablation: str = 'none',
                  **kwargs) -> MixedAE:
    """Build a MixedAE from its config (``type='MixedAE'``).

    Args:
        segment_embed (str): Where the learnable group-slot embedding goes:
            ``'decoder'`` (default), ``'encoder'`` or ``'none'``;
            ``ablation='mae'`` sets ``'none'``.
        ablation (str): ``'none'`` (full MixedAE), ``'mae'``,
            ``'naive_mixing'`` or ``'homo_attn_only'``; see ``ABLATIONS``.
            The preset replaces values the config states at the modules'
            defaults; a value that differs from both is an error.
        Other arguments are those of :class:`MixedAE`.

    Returns:
        A :class:`MixedAE`; with the backbone's ``mixing=False`` (the
        ``'mae'`` ablation), an :class:`MAEAblation`.
    """
    if ablation not in ABLATIONS:
        raise ValueError(f'ablation must be one of {sorted(ABLATIONS)}, '
                         f'got {ablation!r}')
    if segment_embed not in SEGMENT_EMBED_CHOICES:
        raise ValueError(f'segment_embed must be one of '
                         f'{SEGMENT_EMBED_CHOICES}, got {segment_embed!r}')
    backbone, neck, head = (copy.deepcopy(dict(c))
                            for c in (backbone, neck, head))
    model = dict(type=MixedAE, segment_embed=segment_embed)
    for part, overrides in ABLATIONS[ablation].items():
        cfg = dict(model=model, backbone=backbone, head=head)[part]
        for key, value in overrides.items():
            _apply_preset(cfg, key, value, ablation)
    segment_embed = model['segment_embed']
    _set(backbone, 'segment_embed', segment_embed == 'encoder',
         f'segment_embed={segment_embed!r}')
    _set(neck, 'segment_embed', segment_embed == 'decoder',
         f'segment_embed={segment_embed!r}')

    backbone = MODELS.build(backbone)
    backbone.check_pretraining()
    derived = 'the backbone'
    _set(neck, 'num_patches', backbone.num_patches, derived)
    _set(neck, 'embed_dim', backbone.embed_dims, derived)
    _set(neck, 'patch_size', backbone.patch_size, derived)
    _set(neck, 'group_size', backbone.group_size, derived)
    _set(head, 'patch_size', backbone.patch_size, derived)
    model_class = MixedAE if backbone.mixing else MAEAblation
    return model_class(backbone=backbone, neck=neck, head=head,
                       segment_embed=segment_embed, ablation=ablation,
                       **kwargs)
