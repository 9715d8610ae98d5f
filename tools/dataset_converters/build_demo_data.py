"""Build the embedded demo dataset (crops of scikit-image's photographs)."""
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'build_demo_data.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

from mixedae_mm.datasets.demo_data import main

if __name__ == '__main__':
    main()
