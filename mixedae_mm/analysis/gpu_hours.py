"""The GPU hours of a config's full schedule: the images it sees, and a
FLOP count of one image's training step to fall back on when no measured
throughput is at hand.

``tools/analysis_tools/estimate_gpu_hours.py`` is the command line over it
(its docstring says which estimate to trust).
"""
import importlib

import torch

from ..downstream import build_model
from ..visualization import can_reconstruct
from .flop_counting import flop_counter
from .step_cost import Trainer

__all__ = ['TRAIN_IMAGES', 'MEASURED_UTILISATION', 'UnknownTrainingSetError',
           'images_seen', 'forward_flops', 'pretraining_step_flops',
           'gpu_hours']

#: images in the training split of the datasets the recipes use
TRAIN_IMAGES = {
    'ImageNet': 1_281_167,
    'ADE20KDataset': 20_210,
    'CocoDataset': 117_266,
}
#: the share of the bf16/fp16 peak that measured MAE runs reached
#: (docs/transfer.md, "Costs"): the FLOP-based fallback's default
MEASURED_UTILISATION = 0.1


class UnknownTrainingSetError(ValueError):
    """An epoch-based schedule on a data set whose size is not known."""


def input_size(cfg):
    """(H, W) the model trains on, from the config."""
    # the recipes crop or pad to the backbone's img_size (LSJ pads to 1024)
    size = cfg.model.backbone.get('img_size', 224)
    return (size, size) if isinstance(size, int) else tuple(size)


def data_sample(scope, hw):
    if scope == 'mmpretrain':
        return None
    module = importlib.import_module(f'{scope}.structures')
    sample_cls = module.SegDataSample if scope == 'mmseg' else \
        module.DetDataSample
    sample = sample_cls()
    sample.set_metainfo(
        dict(img_shape=hw, pad_shape=hw, ori_shape=hw, batch_input_shape=hw,
             scale_factor=(1., 1.)))
    return [sample]


def forward_flops(cfg) -> float:
    """``(FLOPs, (H, W), forwards per training step)`` of one image: one
    forward of a transfer model; a pretraining model's whole step (forward
    and backward counted, factor 1)."""
    scope = cfg.default_scope
    cfg.model.backbone.pop('init_cfg', None)  # no checkpoint needed to count
    hw = input_size(cfg)
    model = build_model(cfg.model, scope).eval()
    if can_reconstruct(model):  # a MixedAE pretraining model
        return pretraining_step_flops(model, hw), hw, 1
    with torch.no_grad(), flop_counter() as counter:
        model(torch.randn(1, 3, *hw), data_sample(scope, hw), mode='tensor')
    # forward + backward is ~3 forwards; a frozen backbone (linear probe)
    # needs no backward through it, and the head's share is negligible
    trainable = any(p.requires_grad for p in model.backbone.parameters())
    return counter.get_total_flops(), hw, 3 if trainable else 1


def pretraining_step_flops(model, hw) -> float:
    """FLOPs per image of a MixedAE training step (forward + backward of
    ``model.loss``, as benchmark_vs_mae.py counts them) on one mixing
    group: the encoder sees a quarter of the patches of each image, so one
    forward of the full ViT would overcount."""
    group = model.backbone.group_size
    trainer = Trainer(model, torch.device('cpu'), 'none', False)
    torch.manual_seed(0)
    return trainer.flops(torch.randn(group, 3, *hw)) / group


def images_seen(cfg, gpus, train_images=None):
    """Images the schedule trains on: iterations x total batch, or epochs x
    the training set (``train_images``, else the size of a known dataset
    type; else :class:`UnknownTrainingSetError`)."""
    loader = cfg.train_dataloader
    batch = loader.batch_size * gpus
    train_cfg = cfg.train_cfg
    if 'max_iters' in train_cfg:
        return train_cfg.max_iters * batch
    dataset, repeats = loader.dataset, 1
    while 'dataset' in dataset:  # RepeatDataset and friends
        repeats *= dataset.get('times', 1)
        dataset = dataset.dataset
    if train_images is None:
        if dataset.type not in TRAIN_IMAGES:
            raise UnknownTrainingSetError(
                f'the size of a {dataset.type} training set is not known '
                f'(only {sorted(TRAIN_IMAGES)}): pass --train-images N')
        train_images = TRAIN_IMAGES[dataset.type]
    return train_cfg.max_epochs * repeats * train_images


def gpu_hours(images: int, images_per_second: float) -> float:
    """GPU hours to train on ``images`` at ``images_per_second`` per GPU."""
    return images / images_per_second / 3600
