from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from .fsdp import is_sharded


@HOOKS.register_module()
class ReconstructionVisualizationHook(Hook):
    """Every ``interval`` iterations, picture what the model reconstructs.

    The first ``num_images`` images of the training set go through the
    config's ``test_pipeline`` (so no random augmentation), are mixed in
    groups with a fixed ``seed`` and reconstructed; each group's picture
    (rows named, columns headed by the file names; see
    :func:`mixedae_mm.visualization.reconstruction_grids`) goes to the
    runner's visualizer as ``reconstruction_group<i>`` at the current
    iteration: ``work_dir/<timestamp>/vis_data/vis_image/`` with the
    ``LocalVisBackend``, the images tab with TensorBoard.

    Training is unaffected: the model runs in eval mode without gradients
    (its mode is restored after), and the partition is drawn under a forked
    random state, so the global random numbers training uses do not move.

    Args:
        interval (int): Iterations between pictures.
        num_images (int): Training images shown (evenly spaced over the
            training set), rounded up to a multiple of the group size.
        seed (int): Seed of the partition (the same every time, so the
            pictures of one run differ only by training).
        pixel_stats (str): See
            :func:`mixedae_mm.visualization.reconstruct`.
        scale (int): Cell upscaling; 0: to at least 128 pixels.
    """
    priority = 'LOW'

    def __init__(self, interval: int = 1000, num_images: int = 4,
                 seed: int = 0, pixel_stats: str = 'target',
                 scale: int = 0) -> None:
        if interval < 1 or num_images < 1:
            raise ValueError(f'interval and num_images must be >= 1, got '
                             f'{interval} and {num_images}')
        self.interval = interval
        self.num_images = num_images
        self.seed = seed
        self.pixel_stats = pixel_stats
        self.scale = scale
        self.image_paths: list = []
        self._inputs: Optional[torch.Tensor] = None

    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def before_train(self, runner) -> None:
        from mixedae_mm import visualization as vis
        model = self._model(runner)
        if not vis.can_reconstruct(model):
            raise ValueError(f'ReconstructionVisualizationHook needs a model '
                             f'with reconstruct (MixedAE), got '
                             f'{type(model).__name__}: remove the hook')
        pipeline = vis.test_pipeline_of(runner.cfg)
        paths = vis.spread_image_paths(runner.train_dataloader.dataset,
                                       self.num_images)
        self.image_paths = vis.pad_to_groups(paths, model.backbone.group_size)
        with torch.no_grad():
            self._inputs = vis.load_inputs(self.image_paths, pipeline,
                                           model)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if self._inputs is None or not self.every_n_train_iters(
                runner, self.interval):
            return
        if is_sharded(runner.model):
            # every rank holds a shard: all gather the full weights (a
            # collective call), rank 0 pictures
            from torch.distributed.fsdp import FullyShardedDataParallel
            with FullyShardedDataParallel.summon_full_params(
                    runner.model, writeback=False):
                self._picture(runner)
        else:
            self._picture(runner)

    def _picture(self, runner) -> None:
        if runner.rank != 0:
            return
        from mixedae_mm import visualization as vis
        scale = self.scale or vis.cell_scale(self._inputs)
        pictures = vis.render(
            self._model(runner), self._inputs, seed=self.seed, scale=scale,
            pixel_stats=self.pixel_stats,
            image_names=[vis.image_name(p) for p in self.image_paths])
        for index, picture in enumerate(pictures):
            runner.visualizer.add_image(f'reconstruction_group{index}',
                                        picture.image, step=runner.iter + 1)
