"""Build the embedded demo dataset (crops of scikit-image's photographs)."""
from mixedae_mm.datasets.demo_data import main

if __name__ == '__main__':
    main()
