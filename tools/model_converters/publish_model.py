"""Prepare a checkpoint for release, as OpenMMLab publishes its models.

    python tools/model_converters/publish_model.py \\
        work_dirs/mixedae/iter_300.pth release/mixedae_vit-b.pth
    # -> release/mixedae_vit-b-1a2b3c4d.pth (printed on stdout)

Keeps ``state_dict`` and a small plain ``meta`` (iteration, seed, config text,
versions); drops the optimizer, message hub, schedulers and anything else
that is not weights. The file loads with ``torch.load(weights_only=True)``
and its name ends in the first 8 hex digits of its sha256, so a download can
be checked with ``sha256sum``. Written atomically: the final name appears only
once the file is complete.
"""
import argparse
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'publish_model.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

import torch

from mixedae_mm.checkpoints import (add_overwrite_flag, atomic_write,
                                    check_destination, exit_on_error, finite,
                                    read_state_dict)
from mixedae_mm.checkpoints.converters import (hashed_name, left_out_entries,
                                               publishable, sha256_of)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='training checkpoint (mmengine .pth)')
    parser.add_argument(
        'dst', help='output name; the file is saved as DST-<sha256[:8]>.pth')
    parser.add_argument(
        '--half', action='store_true',
        help='store floating-point tensors as float16: half the file; '
        'loading casts them to the model\'s dtype')
    finite.add_flag(parser)
    add_overwrite_flag(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    with exit_on_error('publish_model.py'):
        state, checkpoint = read_state_dict(args.src)
        finite.check(state, args.src, args.allow_nonfinite)
    published = publishable(checkpoint, state, args.src, args.half)

    def final_name(tmp):
        # the name is known once the file is written; a refusal removes it
        final = hashed_name(args.dst, sha256_of(tmp))
        check_destination(final, args.src, args.overwrite)
        return final

    with exit_on_error('publish_model.py'):
        final = atomic_write(args.dst, lambda f: torch.save(published, f),
                             final_path=final_name)
    left_out = left_out_entries(checkpoint)
    print(f'{len(state)} tensors; left out: {left_out or "nothing"}',
          file=sys.stderr)
    print(final)
    return 0


if __name__ == '__main__':
    sys.exit(main())
