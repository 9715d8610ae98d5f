"""Make a trusted checkpoint readable with ``torch.load(weights_only=True)``.

    python tools/model_converters/trust_checkpoint.py IN.pth OUT.pth --trust

Our tools, ``--resume``, ``load_from`` and ``init_cfg`` read checkpoints with
``weights_only=True`` only, so a file that pickles Python objects cannot run
code when loaded. Plain mmengine / mmpretrain / mmseg / mmdet checkpoints
(their message hub holds ``HistoryBuffer`` objects and numpy values) and
official MAE training checkpoints (an ``argparse.Namespace`` under
``args``) are refused. This tool unpickles such a file ONCE, with
``weights_only=False`` -- which runs whatever code the file holds, hence the
explicit ``--trust`` -- and writes a copy with the same content as tensors
and plain Python values:

- ``HistoryBuffer`` -> the tagged dict that ``DurableCheckpointHook`` and
  ``WeightsOnlyCheckpointHook`` write and rebuild on ``--resume``;
- numpy arrays -> tensors, numpy scalars -> Python numbers;
- ``argparse.Namespace`` -> a dict.

Anything else that still needs unpickling stops the tool with its name. The
copy is written atomically; the input is left as it is.
"""
import argparse
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'trust_checkpoint.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

import torch

from mixedae_mm import checkpoints

TOOL = 'trust_checkpoint.py'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='checkpoint from a source you trust')
    parser.add_argument('dst', help='weights-only copy; written atomically')
    parser.add_argument(
        '--trust', action='store_true',
        help='confirm that SRC comes from a source you trust: loading it '
        'runs any code pickled in it')
    checkpoints.add_overwrite_flag(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.trust:
        sys.exit(
            f'{TOOL}: error: refusing to load {args.src} without --trust: '
            'loading it with weights_only=False runs any code pickled in '
            'it. Add --trust only if the file comes from a source you trust '
            '(your own run, an official release).')
    with checkpoints.exit_on_error(TOOL):
        checkpoints.check_destination(args.dst, args.src, args.overwrite)
        checkpoint = checkpoints.to_weights_only(
            checkpoints.trusted_load(args.src))
        checkpoints.check_weights_only(checkpoint, args.src)
    checkpoints.atomic_write(args.dst, lambda f: torch.save(checkpoint, f))
    print(f'{args.src} -> {args.dst} (loads with weights_only=True)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
