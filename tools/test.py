"""Evaluate a checkpoint with an mmpretrain / mmsegmentation / mmdetection
config of mixedae_mm (the flags of mmpretrain's ``tools/test.py``).

The code is ``mixedae_mm/cli/test.py``; an installed package has it as the
``mixedae-test`` command.
"""
import os.path as osp
import sys

# Make ``import mixedae_mm`` work from a plain clone, without installing.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mixedae_mm.cli.test import main, parse_args  # noqa: E402,F401

if __name__ == '__main__':
    main()
