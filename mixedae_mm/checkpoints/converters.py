"""What the converters in ``tools/model_converters/`` make of a checkpoint's
tensors, as functions: the encoder alone (``extract_backbone.py``), the
timm and official MAE layouts (``convert_timm.py``) and a release file
(``publish_model.py``). The command lines read, check, write and print.

Needs torch only, like the rest of ``mixedae_mm.checkpoints``.
"""
import hashlib
import os.path as osp
from collections import defaultdict

from . import keymap
from .files import CheckpointError

__all__ = [
    'BACKBONE', 'extract_backbone', 'backbone_file', 'to_timm', 'convert',
    'package', 'summarize', 'META_KEYS', 'is_plain', 'publishable',
    'left_out_entries', 'sha256_of', 'hashed_name'
]

#: the prefix of the encoder's keys in a pretraining checkpoint
BACKBONE = 'backbone.'


# ------------------------------------------------------ extract_backbone.py
def extract_backbone(state: dict, keep_segment_embed: bool = False):
    """``(backbone state without prefix, {dropped key: reason})``."""
    backbone, others = keymap.strip_prefix(state, BACKBONE)
    if not backbone:
        raise CheckpointError(
            f'no key starts with {BACKBONE!r} (found e.g. '
            f'{sorted(state)[:5]}): is this already an extracted backbone?')
    dropped = {k: 'not the encoder (decoder / head)' for k in others}
    if not keep_segment_embed and 'segment_embed' in backbone:
        del backbone['segment_embed']
        dropped[BACKBONE + 'segment_embed'] = (
            keymap.ENCODER_ONLY_OURS['segment_embed'] +
            ' (keep it with --keep-segment-embed)')
    return keymap.plain(backbone), dropped


def backbone_file(backbone: dict, dropped: dict, src: str) -> dict:
    """``{'state_dict', 'meta'}`` of an extracted backbone read from
    ``src``: the meta names the source and what was left out."""
    meta = dict(
        source=osp.basename(src),
        converter='tools/model_converters/extract_backbone.py',
        # e.g. ['backbone.segment_embed', 'neck.*']
        left_out=sorted({k if k.startswith(BACKBONE) else
                         k.split('.')[0] + '.*' for k in dropped}))
    return dict(state_dict=backbone, meta=meta)


# ---------------------------------------------------------- convert_timm.py
def to_timm(state: dict) -> keymap.Converted:
    """Our encoder -> timm; a full pretraining state is reduced to
    ``backbone.*`` first (the decoder and head are reported as dropped)."""
    if any(k.startswith(BACKBONE) for k in state):
        encoder, others = keymap.strip_prefix(state, BACKBONE)
        converted = keymap.mm_to_timm(encoder)
        dropped = {BACKBONE + k: why for k, why in converted.dropped.items()}
        dropped.update({k: 'decoder / head: a timm ViT is the encoder only '
                           '(--to mae keeps the decoder)' for k in others})
        return keymap.Converted(converted.state, dropped)
    return keymap.mm_to_timm(state)


def convert(state: dict, direction: str) -> keymap.Converted:
    """``direction``: 'to timm', 'to mae', 'from timm' or 'from mae'."""
    if direction == 'to timm':
        return to_timm(state)
    if direction == 'to mae':
        if not any(k.startswith(BACKBONE) for k in state):
            raise CheckpointError(
                "--to mae needs a full pretraining checkpoint ('backbone.*' "
                "and 'neck.*' keys); for an extracted backbone use --to timm "
                '(MAE names its encoder as timm does)')
        return keymap.mm_pretrain_to_mae(state)
    if direction == 'from timm':
        return keymap.timm_to_mm(state)
    if direction == 'from mae':
        return keymap.mae_to_mm_pretrain(state)
    raise ValueError(f'unknown direction {direction!r}')


def package(converted: keymap.Converted, direction: str, src: str):
    """The object to save, in the layout the target's loaders expect."""
    state = keymap.plain(converted.state)
    if direction == 'to timm':
        return state
    if direction == 'to mae':
        return dict(model=state)
    meta = dict(
        source=osp.basename(src),
        converter=f'tools/model_converters/convert_timm.py --{direction}',
        dropped=sorted(converted.dropped))
    return dict(state_dict=state, meta=meta)


def summarize(dropped: dict) -> str:
    """One line per reason, with a count and the first key."""
    by_reason = defaultdict(list)
    for key, why in dropped.items():
        by_reason[why].append(key)
    return '\n'.join(
        f'  left out {len(keys)} ({keys[0]}{", ..." if len(keys) > 1 else ""})'
        f': {why}' for why, keys in by_reason.items())


# --------------------------------------------------------- publish_model.py
#: mmengine ``meta`` entries worth shipping (others describe the training
#: process, not the weights)
META_KEYS = ('epoch', 'iter', 'seed', 'experiment_name', 'time', 'cfg',
             'mmengine_version', 'mmpretrain_version', 'dataset_meta')


def is_plain(value) -> bool:
    """JSON-like: what a reader may inspect without our code."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v)
                   for k, v in value.items())
    return False


def publishable(checkpoint: dict, state: dict, src: str,
                half: bool = False) -> dict:
    """``{'state_dict', 'meta'}`` with plain tensors and plain meta only;
    with ``half``, floating-point tensors in float16."""
    meta = checkpoint.get('meta')
    meta = meta if isinstance(meta, dict) else {}
    meta = {k: meta[k] for k in META_KEYS if k in meta and is_plain(meta[k])}
    meta.update(source=osp.basename(src),
                converter='tools/model_converters/publish_model.py')
    state = keymap.plain(state)
    if half:
        state = {k: v.half() if v.is_floating_point() else v
                 for k, v in state.items()}
        meta.update(stored_as='float16')
    return dict(state_dict=state, meta=meta)


def left_out_entries(checkpoint: dict) -> list:
    """The top-level entries of ``checkpoint`` a release leaves out (all
    but the weights and ``meta``), sorted; none where the weights are the
    top level."""
    weights_key = next((k for k in ('state_dict', 'model')
                        if isinstance(checkpoint.get(k), dict)), None)
    return [] if weights_key is None else sorted(
        k for k in checkpoint if k not in (weights_key, 'meta'))


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def hashed_name(out: str, sha256: str) -> str:
    """``a/b.pth`` -> ``a/b-<8 hex>.pth``."""
    stem = out[:-len('.pth')] if out.endswith('.pth') else out
    return f'{stem}-{sha256[:8]}.pth'
