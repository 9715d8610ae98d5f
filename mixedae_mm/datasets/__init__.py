from .demo_data import build_demo_dataset, shipped_photos

__all__ = ['build_demo_dataset', 'shipped_photos']
