from .demo_data import build_demo_dataset, shipped_photos
from .fake_imagenet import make_imagenet_folder
from .fashion_mnist import (DEBIAN_FASHION_MNIST, FashionMNISTFiles,
                            FashionMNISTMissingError, GreyToRGB,
                            fashion_mnist_files, load_fashion_mnist)
from .transforms import (CheckedLoadImageFromFile, UnreadableImageError,
                         UnreadableImageReportHook, check_image_loading)

__all__ = [
    'DEBIAN_FASHION_MNIST', 'FashionMNISTFiles', 'FashionMNISTMissingError',
    'GreyToRGB', 'fashion_mnist_files', 'load_fashion_mnist',
    'CheckedLoadImageFromFile', 'UnreadableImageError',
    'UnreadableImageReportHook', 'build_demo_dataset', 'check_image_loading',
    'make_imagenet_folder', 'shipped_photos'
]
