"""Pictures of the dense study: test scenes, their ground truth and each
arm's prediction, drawn with mmseg's and mmdet's own visualizers
(``tools/visualization/vis_dense_predictions.py``)."""
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..datasets.fmnist_scenes import SEG_CLASSES, SEG_PALETTE

#: the 64x64 scenes are drawn this many times larger, so that the
#: visualizers' outlines and labels are legible
UPSCALE = 4
#: detections drawn: those scored above this
SCORE_THRESHOLD = 0.5


def load_trained(config: str, checkpoint: str, scenes: str):
    """``(model, cfg)``: a dense study config's model in eval mode with a
    trained checkpoint loaded strictly, its test set at ``scenes``."""
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint

    from ..downstream import build_model
    cfg = Config.fromfile(config)
    cfg.test_dataloader.dataset.data_root = scenes
    cfg.model.backbone.init_cfg = None  # the trained checkpoint has it all
    model = build_model(cfg.model, cfg.default_scope)
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True,
                    logger='silent')
    return model.eval(), cfg


@torch.no_grad()
def predict(model, cfg, indices: Sequence[int]) -> List:
    """The model's data samples (ground truth and prediction) for test
    scenes ``indices``, through the config's test pipeline."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope
    from mmengine.registry import DATASETS
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
        return model.test_step(pseudo_collate(
            [dataset[i] for i in indices]))


def _upscaled(sample, task: str):
    """A copy of a data sample drawn ``UPSCALE`` times larger (``sample``
    unchanged: ``clone`` shares the nested instances, so each is copied
    before it is scaled)."""
    sample = sample.clone()

    def nearest(tensor):
        return F.interpolate(tensor[None].float(), scale_factor=UPSCALE,
                             mode='nearest')[0].to(tensor.dtype)

    if task == 'seg':
        from mmengine.structures import PixelData
        for key in ('gt_sem_seg', 'pred_sem_seg'):
            if key in sample:
                setattr(sample, key,
                        PixelData(data=nearest(getattr(sample, key).data)))
        return sample
    for key in ('gt_instances', 'pred_instances'):
        if key not in sample:
            continue
        instances = getattr(sample, key).clone()
        setattr(sample, key, instances)
        instances.bboxes = instances.bboxes * UPSCALE
        masks = instances.masks
        if hasattr(masks, 'masks'):  # BitmapMasks (ground truth)
            masks = torch.from_numpy(masks.masks)
        instances.masks = nearest(masks.bool()).bool() if len(masks) else \
            masks.bool().new_zeros((0, 64 * UPSCALE, 64 * UPSCALE))
    return sample


def _visualizer(task: str):
    palette = list(SEG_PALETTE)
    if task == 'seg':
        from mmseg.visualization import SegLocalVisualizer
        visualizer = SegLocalVisualizer(name='dense_seg', alpha=0.6)
        visualizer.dataset_meta = dict(classes=SEG_CLASSES, palette=palette)
    else:
        from mmdet.visualization import DetLocalVisualizer
        visualizer = DetLocalVisualizer(name='dense_det', alpha=0.5,
                                        line_width=1)
        visualizer.dataset_meta = dict(classes=SEG_CLASSES[1:],
                                       palette=palette[1:])
    return visualizer


def draw(visualizer, image: np.ndarray, sample, task: str, gt: bool
         ) -> np.ndarray:
    """``image`` (RGB, upscaled) with ``sample``'s ground truth (``gt``) or
    prediction drawn by the codebase's visualizer."""
    kwargs = dict(draw_gt=gt, draw_pred=not gt, show=False)
    if task == 'det' and not gt:
        kept = sample.pred_instances.scores > SCORE_THRESHOLD
        if not kept.any():  # mmdet's visualizer cannot draw no masks
            return image
        kwargs['pred_score_thr'] = SCORE_THRESHOLD
    visualizer.add_datasample('scene', image, data_sample=sample, **kwargs)
    return visualizer.get_image()


def prediction_grid(task: str, config: str, checkpoints: Dict[str, str],
                    scenes: str, indices: Sequence[int], out: str) -> None:
    """A figure, one row per test scene: the input, its ground truth, and
    the prediction of each model in ``checkpoints`` (title -> trained
    checkpoint of ``config``)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from PIL import Image
    predictions = {}
    for title, checkpoint in checkpoints.items():
        model, cfg = load_trained(config, checkpoint, scenes)
        predictions[title] = predict(model, cfg, indices)
    visualizer = _visualizer(task)
    columns = ['input', 'ground truth'] + list(checkpoints)
    fig, axes = plt.subplots(len(indices), len(columns), squeeze=False,
                             figsize=(2.1 * len(columns), 2.2 * len(indices)))
    for row, index in enumerate(indices):
        first = next(iter(predictions.values()))[row]
        image = np.asarray(Image.open(first.img_path).convert('RGB'))
        image = image.repeat(UPSCALE, 0).repeat(UPSCALE, 1)
        panels = [image, draw(visualizer, image, _upscaled(first, task),
                              task, gt=True)]
        panels += [draw(visualizer, image,
                        _upscaled(predictions[title][row], task), task,
                        gt=False) for title in checkpoints]
        for column, panel in enumerate(panels):
            axis = axes[row][column]
            axis.imshow(panel)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(columns[column], fontsize=9)
        axes[row][0].set_ylabel(f'test scene {index}', fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
