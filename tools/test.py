"""Evaluate a checkpoint with an mmpretrain / mmsegmentation / mmdetection
config of mixedae_mm (the flags of mmpretrain's ``tools/test.py``).

The code is ``mixedae_mm/cli/test.py``; an installed package has it as the
``mixedae-test`` command.
"""
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'test.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

from mixedae_mm.cli.test import main, parse_args  # noqa: F401

if __name__ == '__main__':
    main()
