"""Train with an mmpretrain / mmsegmentation / mmdetection config of
mixedae_mm (the same flags as mmpretrain's ``tools/train.py``).

The code is ``mixedae_mm/cli/train.py``; an installed package has it as
the ``mixedae-train`` command.
"""
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'train.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

# the helpers, for scripts and tests that load this file
from mixedae_mm.cli.train import (FSDP_BF16, configure_amp,  # noqa: F401
                                  configure_fsdp_precision, main, merge_args,
                                  parse_args)

if __name__ == '__main__':
    main()
