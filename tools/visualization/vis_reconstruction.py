"""Save PNG grids of what a MixedAE checkpoint reconstructs.

    python tools/visualization/vis_reconstruction.py CONFIG CHECKPOINT \
        IMG_OR_DIR [IMG_OR_DIR ...] --out DIR [--seed 0] [--device cpu]

The code is ``mixedae_mm/cli/vis_reconstruction.py``; an installed package
has it as the ``mixedae-vis-reconstruction`` command.
"""
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'vis_reconstruction.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

# the helpers, for demo_figures.py and tests that load this file
from mixedae_mm.cli.vis_reconstruction import (  # noqa: F401
    common_parser, image_paths, load_model, load_model_and_images, main,
    parse_args, save_reconstructions)

if __name__ == '__main__':
    sys.exit(main() and 0)
