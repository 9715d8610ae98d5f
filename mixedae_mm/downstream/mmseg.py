"""``type='MixedAEViT'`` and mixedae_mm's hooks and image loader inside
mmsegmentation configs, and the dense study's data set and metric."""
from typing import Dict

from mmseg.datasets import BaseSegDataset
from mmseg.evaluation import IoUMetric
from mmseg.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS

import mixedae_mm  # noqa: F401  (layer decay constructor, atomic_local)
from mixedae_mm.datasets.fmnist_scenes import SEG_CLASSES, SEG_PALETTE
from mixedae_mm.downstream import register_in

register_in(MODELS, HOOKS, TRANSFORMS)


@DATASETS.register_module()
class FashionMNISTScenesDataset(BaseSegDataset):
    """The dense study's scenes (``tools/dataset_converters/
    fmnist_scenes.py``): PNG images and PNG class maps, 0 = background,
    1-10 = Fashion-MNIST's classes."""
    METAINFO = dict(classes=SEG_CLASSES,
                    palette=[list(colour) for colour in SEG_PALETTE])

    def __init__(self, img_suffix: str = '.png', seg_map_suffix: str = '.png',
                 **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=False, **kwargs)


@METRICS.register_module()
class PerClassIoUMetric(IoUMetric):
    """mmseg's ``IoUMetric``, also returning each class's IoU (%) as
    ``IoU.<class>``, so that it reaches the metrics a test run writes
    (``<timestamp>.json``) and not only the log's table."""

    def compute_metrics(self, results: list) -> Dict[str, float]:
        metrics = super().compute_metrics(results)
        intersect = sum(result[0] for result in results)
        union = sum(result[1] for result in results)
        for name, iou in zip(self.dataset_meta['classes'],
                             (intersect / union).tolist()):
            metrics[f'IoU.{name}'] = round(iou * 100, 2)
        return metrics
