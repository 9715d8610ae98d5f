"""Convert ViT weights between MixedAE (mmpretrain names) and timm / MAE.

    # ours (pretraining checkpoint or extracted backbone) -> timm ViT
    python tools/model_converters/convert_timm.py IN.pth OUT.pth --to timm
    # timm / DeiT ViT -> our extracted-backbone format
    python tools/model_converters/convert_timm.py IN.pth OUT.pth --from timm
    # official MAE pretraining checkpoint (with or without decoder) -> ours
    python tools/model_converters/convert_timm.py IN.pth OUT.pth --from mae
    # our pretraining checkpoint -> official MAE layout
    python tools/model_converters/convert_timm.py IN.pth OUT.pth --to mae

What each output is:

- ``--to timm``: a bare ``{name: tensor}`` dict for
  ``timm.models.vision_transformer.VisionTransformer.load_state_dict`` (built
  with ``num_classes=0``; the classifier is not part of a backbone).
- ``--to mae``: ``{'model': {name: tensor}}``, as the official MAE releases.
- ``--from timm``: ``{'state_dict', 'meta'}`` of our encoder without prefix:
  ``MixedAEViT.load_pretrained(path, prefix='')``.
- ``--from mae``: ``{'state_dict', 'meta'}`` with ``backbone.*`` (and
  ``neck.*`` when the file has the decoder), i.e. the layout of a MixedAE
  pretraining checkpoint: ``load_from`` of a MixedAE run, or a transfer with
  ``prefix='backbone.'``. MixedAE-only parameters (segment embeddings,
  contrastive projector) are then missing and keep their initialisation.

Keys are renamed by the table in ``keymap.py``; a key it does not know stops
the conversion with its name. Inputs load with ``weights_only=True``; outputs
are written atomically.
"""
import argparse
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'convert_timm.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

import torch

from mixedae_mm.checkpoints import (CheckpointError, add_overwrite_flag,
                                    atomic_write, check_destination, keymap,
                                    read_state_dict)
from mixedae_mm.checkpoints.converters import convert, package, summarize


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='input checkpoint (.pth)')
    parser.add_argument('dst', help='output file; written atomically')
    way = parser.add_mutually_exclusive_group(required=True)
    way.add_argument(
        '--to', choices=['timm', 'mae'],
        help='from our layout (pretraining checkpoint, or extracted backbone '
        'for timm) to this one')
    way.add_argument(
        '--from', dest='from_', choices=['timm', 'mae'],
        help='from this layout (state dict possibly under "model" or '
        '"state_dict") to ours')
    add_overwrite_flag(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    direction = f'to {args.to}' if args.to else f'from {args.from_}'
    try:
        check_destination(args.dst, args.src, args.overwrite)
        state, _ = read_state_dict(args.src)
        converted = convert(state, direction)
    except keymap.UnmappedKeyError as err:
        hint = ''
        if direction == 'from mae':
            hint = (' (a fine-tuned MAE classifier is a timm ViT: convert it '
                    'with --from timm)')
        sys.exit(f'convert_timm.py: error: {err}{hint}')
    except CheckpointError as err:
        sys.exit(f'convert_timm.py: error: {err}')
    if direction == 'from mae' and not any(
            k.startswith('neck.') for k in converted.state):
        print('note: no decoder in the input; a MixedAE run loading it '
              'starts its decoder from scratch')
    converted_file = package(converted, direction, args.src)
    atomic_write(args.dst, lambda f: torch.save(converted_file, f))
    print(f'{len(converted.state)} tensors ({direction}) -> {args.dst}')
    if converted.dropped:
        print(summarize(converted.dropped))
    return 0


if __name__ == '__main__':
    sys.exit(main())
