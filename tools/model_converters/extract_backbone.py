"""Extract the encoder of a MixedAE pretraining checkpoint.

    python tools/model_converters/extract_backbone.py \\
        work_dirs/mixedae/iter_300.pth mixedae_backbone.pth

The output holds ``{'state_dict': {name: tensor}, 'meta': {...}}`` with the
``backbone.`` prefix removed, so it loads with
``MixedAEViT.load_pretrained(path, prefix='')``, an ``init_cfg`` of
``dict(type='Pretrained', checkpoint=path)`` without prefix, or any
mmpretrain ``VisionTransformer``. Decoder, head, optimizer and logs are left
behind; it loads with ``torch.load(weights_only=True)``.
"""
import argparse
import os.path as osp
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'extract_backbone.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

import torch

from mixedae_mm.checkpoints import (CheckpointError, add_overwrite_flag,
                                    atomic_write, check_destination, finite,
                                    keymap, read_state_dict)

PREFIX = 'backbone.'


def extract(state: dict, keep_segment_embed: bool = False):
    """``(backbone state without prefix, {dropped key: reason})``."""
    backbone, others = keymap.strip_prefix(state, PREFIX)
    if not backbone:
        raise CheckpointError(
            f'no key starts with {PREFIX!r} (found e.g. '
            f'{sorted(state)[:5]}): is this already an extracted backbone?')
    dropped = {k: 'not the encoder (decoder / head)' for k in others}
    if not keep_segment_embed and 'segment_embed' in backbone:
        del backbone['segment_embed']
        dropped[PREFIX + 'segment_embed'] = (
            keymap.ENCODER_ONLY_OURS['segment_embed'] +
            ' (keep it with --keep-segment-embed)')
    return keymap.plain(backbone), dropped


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Keep the backbone.* weights of a MixedAE pretraining '
        'checkpoint, without the prefix, as a weights-only checkpoint for '
        'fine-tuning and transfer.')
    parser.add_argument('src', help='pretraining checkpoint (mmengine .pth)')
    parser.add_argument('dst', help='output file; written atomically')
    parser.add_argument(
        '--keep-segment-embed', action='store_true',
        help='also keep the encoder-side segment embedding (only trained '
        "with segment_embed='encoder'; unused by plain ViTs, which ignore it)")
    finite.add_flag(parser)
    add_overwrite_flag(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_destination(args.dst, args.src, args.overwrite)
        state, _ = read_state_dict(args.src)
        backbone, dropped = extract(state, args.keep_segment_embed)
    except CheckpointError as err:
        sys.exit(f'extract_backbone.py: error: {err}')
    refusal = finite.refusal(backbone, args.src)
    if refusal and not args.allow_nonfinite:
        sys.exit(f'extract_backbone.py: error: {refusal}')
    meta = dict(
        source=osp.basename(args.src),
        converter='tools/model_converters/extract_backbone.py',
        # e.g. ['backbone.segment_embed', 'neck.*']
        left_out=sorted({k if k.startswith(PREFIX) else
                         k.split('.')[0] + '.*' for k in dropped}))
    atomic_write(args.dst,
                 lambda f: torch.save(dict(state_dict=backbone, meta=meta), f))
    print(f'{len(backbone)} tensors -> {args.dst} '
          f'({len(dropped)} non-encoder entries left out)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
