"""Save PNG grids of the keys homologous attention selects.

    python tools/visualization/vis_homologous_attention.py CONFIG CHECKPOINT \
        IMG_OR_DIR [IMG_OR_DIR ...] --out DIR [--seed 0] [--device cpu]

The code is ``mixedae_mm/cli/vis_homologous_attention.py``; an installed
package has it as the ``mixedae-vis-attention`` command.
"""
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'vis_homologous_attention.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

# the helpers, for demo_figures.py and tests that load this file
from mixedae_mm.cli.vis_homologous_attention import (  # noqa: F401
    main, parse_args, save_attention)

if __name__ == '__main__':
    sys.exit(main() and 0)
