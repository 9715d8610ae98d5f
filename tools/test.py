"""Evaluate a checkpoint with an mmpretrain / mmsegmentation / mmdetection
config of mixedae_mm (the flags of mmpretrain's ``tools/test.py``).

The code is ``mixedae_mm/cli/test.py``; an installed package has it as the
``mixedae-test`` command.
"""
from mixedae_mm.cli.test import main, parse_args  # noqa: F401

if __name__ == '__main__':
    main()
