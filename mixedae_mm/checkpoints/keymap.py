"""Parameter names of MixedAE's ViT (mmpretrain layout) <-> timm / MAE.

The layouts differ in names only. Both ViTs embed patches with a Conv2d
``(D, C, p, p)``, project q, k, v with one fused Linear ``(3D, D)`` (q, k, v
stacked in that order, heads contiguous), and add a position embedding
``(1, N + 1, D)`` whose row 0 is the cls position. So converting is renaming:
every tensor keeps its shape, dtype and values, and one rule table serves both
directions.

A rule is a pair of templates ``(ours, theirs)``; ``{i}`` stands for a block
index and ``{p}`` for ``weight``/``bias``. A key that no rule matches raises
:class:`UnmappedKeyError` naming it. Keys that exist on one side only *by
design* (MixedAE's segment embeddings, the contrastive head, a timm classifier)
are not converted but returned in ``Converted.dropped`` with the reason, so
the caller can report them: nothing disappears silently.

Needs torch only (no mmpretrain/timm import), so the converters run
anywhere.
"""
import re
from typing import Dict, Iterable, List, NamedTuple, Tuple

import torch

__all__ = [
    'Converted', 'UnmappedKeyError', 'mm_to_timm',
    'timm_to_mm', 'mm_pretrain_to_mae', 'mae_to_mm_pretrain', 'strip_prefix',
    'plain', 'PRETRAIN_ONLY'
]


class UnmappedKeyError(ValueError):
    """A state dict holds keys that no rule of the chosen layout converts."""


class Converted(NamedTuple):
    """Result of a conversion.

    state: the renamed tensors (same objects, new keys).
    dropped: ``{source key: reason}`` for keys that by design have no
        counterpart in the target layout.
    """
    state: Dict[str, torch.Tensor]
    dropped: Dict[str, str]


# ----------------------------------------------------------------- rules
#: one transformer block: mmpretrain ``TransformerEncoderLayer`` <-> timm
#: ``Block`` (MAE's encoder and decoder blocks are timm blocks)
BLOCK = (
    ('ln1.{p}', 'norm1.{p}'),
    ('attn.qkv.{p}', 'attn.qkv.{p}'),
    ('attn.proj.{p}', 'attn.proj.{p}'),
    ('ln2.{p}', 'norm2.{p}'),
    ('ffn.layers.0.0.{p}', 'mlp.fc1.{p}'),  # Sequential(Linear, act, drop)
    ('ffn.layers.1.{p}', 'mlp.fc2.{p}'),
)

#: the encoder, unprefixed on both sides (ours: an extracted backbone)
ENCODER = (
    ('cls_token', 'cls_token'),  # (1, 1, D)
    ('pos_embed', 'pos_embed'),  # (1, N + 1, D), cls position first
    ('patch_embed.projection.{p}', 'patch_embed.proj.{p}'),  # (D, C, p, p)
    ('pre_norm.{p}', 'norm_pre.{p}'),  # CLIP-style ViTs only
    *((f'layers.{{i}}.{a}', f'blocks.{{i}}.{b}') for a, b in BLOCK),
    ('ln1.{p}', 'norm.{p}'),  # final norm on all tokens
    # norm after average pooling (mmpretrain out_type='avg_featmap', timm
    # global_pool='avg'); both then usually run without the final norm
    ('ln2.{p}', 'fc_norm.{p}'),
)

#: the MAE decoder: ours is ``neck.`` of a pretraining checkpoint
#: (mmpretrain ``MAEPretrainDecoder``), official MAE keeps it top level
DECODER = (
    ('neck.mask_token', 'mask_token'),  # (1, 1, D_dec)
    ('neck.decoder_pos_embed', 'decoder_pos_embed'),  # (1, N + 1, D_dec)
    ('neck.decoder_embed.{p}', 'decoder_embed.{p}'),  # (D_dec, D)
    *((f'neck.decoder_blocks.{{i}}.{a}', f'decoder_blocks.{{i}}.{b}')
      for a, b in BLOCK),
    ('neck.ln1.{p}', 'decoder_norm.{p}'),
    ('neck.decoder_pred.{p}', 'decoder_pred.{p}'),  # (p * p * C, D_dec)
)

#: the whole pretraining model: our ``backbone.``/``neck.`` <-> official MAE
#: (``models_mae.MaskedAutoencoderViT``: encoder with timm names at top level)
PRETRAIN = (
    *((f'backbone.{a}', b) for a, b in ENCODER),
    *DECODER,
)

#: keys of ours that a plain ViT / MAE has no place for, and why
ENCODER_ONLY_OURS = {
    'segment_embed': 'MixedAE encoder-side slot embedding (G, D): only '
                     'meaningful for mixed inputs, pretraining only',
}
PRETRAIN_ONLY = {
    'backbone.segment_embed': ENCODER_ONLY_OURS['segment_embed'],
    'neck.segment_embed': 'MixedAE decoder-side slot embedding (G, D_dec): '
                          'MAE decodes one image per sequence, no slots',
    r'head\..+': 'MixedAE head (homologous contrastive projector): MAE has '
                 'no contrastive loss',
}
#: keys of a timm ViT that our backbone has no place for
ENCODER_ONLY_TIMM = {
    r'head\.(weight|bias)': 'timm classifier head: not part of the backbone',
}

_FIELDS = {'i': r'(?P<i>\d+)', 'p': r'(?P<p>weight|bias)'}


def _compile(template: str) -> 're.Pattern':
    pattern = re.escape(template)
    for name, regex in _FIELDS.items():
        pattern = pattern.replace(re.escape('{%s}' % name), regex)
    return re.compile(pattern)


class _Table:
    """Rule pairs compiled once, applied in either direction."""

    def __init__(self, name: str, rules: Iterable[Tuple[str, str]],
                 only_ours: Dict[str, str], only_theirs: Dict[str, str],
                 theirs: str):
        self.name = name
        self.theirs = theirs
        self.rules = [(tuple(pair), (_compile(pair[0]), _compile(pair[1])))
                      for pair in rules]
        self.only = ({re.compile(k): v for k, v in only_ours.items()},
                     {re.compile(k): v for k, v in only_theirs.items()})

    def convert(self, state: Dict[str, torch.Tensor],
                forward: bool) -> Converted:
        src, dst = (0, 1) if forward else (1, 0)
        out, dropped, unknown = {}, {}, []
        for key, value in state.items():
            for templates, regexes in self.rules:
                match = regexes[src].fullmatch(key)
                if match:
                    new_key = templates[dst].format(**match.groupdict())
                    if new_key in out:  # a rule table bug, not user error
                        raise UnmappedKeyError(
                            f'{key!r} and another key both map to '
                            f'{new_key!r}')
                    out[new_key] = value
                    break
            else:
                reason = next((why for pattern, why in self.only[src].items()
                               if pattern.fullmatch(key)), None)
                if reason is None:
                    unknown.append(key)
                else:
                    dropped[key] = reason
        if unknown:
            raise UnmappedKeyError(self._explain(unknown, forward))
        return Converted(out, dropped)

    def _explain(self, unknown: List[str], forward: bool) -> str:
        src = 'MixedAE (mmpretrain)' if forward else self.theirs
        msg = (f'{len(unknown)} key(s) read as {src} names match no rule of '
               f'the {self.name} table: {sorted(unknown)[:20]}'
               f'{" ..." if len(unknown) > 20 else ""}. ')
        prefixes = sorted({k.split('.')[0] + '.' for k in unknown
                           if k.startswith(('backbone.', 'neck.', 'model.',
                                            'module.'))})
        if prefixes:
            msg += (f'They start with {prefixes}: strip the prefix first or '
                    'pick the converter for that layout (full pretraining '
                    'checkpoint vs extracted backbone). ')
        msg += ('If the model really has these parameters (e.g. relative '
                'position tables, layer scale, a distillation token), add a '
                'rule to mixedae_mm/checkpoints/keymap.py; do not drop them.')
        return msg


_ENCODER = _Table('encoder (ours <-> timm ViT)', ENCODER, ENCODER_ONLY_OURS,
                  ENCODER_ONLY_TIMM, theirs='timm')
_PRETRAIN = _Table('pretraining (ours <-> official MAE)', PRETRAIN,
                   PRETRAIN_ONLY, {}, theirs='official MAE')


def mm_to_timm(state: Dict[str, torch.Tensor]) -> Converted:
    """Our encoder (extracted backbone, no prefix) -> timm ViT names."""
    return _ENCODER.convert(state, forward=True)


def timm_to_mm(state: Dict[str, torch.Tensor]) -> Converted:
    """timm / DeiT ViT -> our encoder names (``head.*`` is dropped)."""
    return _ENCODER.convert(state, forward=False)


def mm_pretrain_to_mae(state: Dict[str, torch.Tensor]) -> Converted:
    """Our full pretraining state (``backbone.*``, ``neck.*``, ``head.*``)
    -> official MAE ``MaskedAutoencoderViT`` names (segment embeddings and
    the contrastive head are dropped)."""
    return _PRETRAIN.convert(state, forward=True)


def mae_to_mm_pretrain(state: Dict[str, torch.Tensor]) -> Converted:
    """Official MAE pretraining state (encoder, optionally decoder) -> our
    ``backbone.*`` + ``neck.*``."""
    return _PRETRAIN.convert(state, forward=False)


def strip_prefix(state: Dict[str, torch.Tensor],
                 prefix: str) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """``(keys under prefix without it, the other keys)``."""
    inside = {k[len(prefix):]: v for k, v in state.items()
              if k.startswith(prefix)}
    return inside, [k for k in state if not k.startswith(prefix)]


def plain(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Detached CPU tensors in a plain ``dict`` (no Parameters, no
    OrderedDict metadata), the weights-only friendly form."""
    return {k: v.detach().cpu() for k, v in state.items()}
