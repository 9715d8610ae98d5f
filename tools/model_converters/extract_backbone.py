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
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'extract_backbone.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

import torch

from mixedae_mm.checkpoints import (add_overwrite_flag, atomic_write,
                                    check_destination, exit_on_error, finite,
                                    read_state_dict)
from mixedae_mm.checkpoints.converters import backbone_file, extract_backbone


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
    with exit_on_error('extract_backbone.py'):
        check_destination(args.dst, args.src, args.overwrite)
        state, _ = read_state_dict(args.src)
        backbone, dropped = extract_backbone(state, args.keep_segment_embed)
        finite.check(backbone, args.src, args.allow_nonfinite)
    extracted = backbone_file(backbone, dropped, args.src)
    atomic_write(args.dst, lambda f: torch.save(extracted, f))
    print(f'{len(backbone)} tensors -> {args.dst} '
          f'({len(dropped)} non-encoder entries left out)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
