"""Build the embedded demo dataset (crops of scikit-image's photographs)."""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mixedae_mm.datasets.demo_data import main  # noqa: E402

if __name__ == '__main__':
    main()
