from .demo_data import build_demo_dataset, shipped_photos
from .transforms import (CheckedLoadImageFromFile, UnreadableImageError,
                         UnreadableImageReportHook, check_image_loading)

__all__ = [
    'CheckedLoadImageFromFile', 'UnreadableImageError',
    'UnreadableImageReportHook', 'build_demo_dataset', 'check_image_loading',
    'shipped_photos'
]
