"""Online kNN: how well the encoder's frozen features classify, during
pretraining (the monitor lightly and solo-learn run beside every SSL
method)."""
import copy
from typing import Optional

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import DefaultScope
from mmpretrain.registry import HOOKS
from torch.distributed.fsdp import FullyShardedDataParallel

from ..evaluation import extract_features, knn_accuracy, weighted_knn_scores
from ..utils import eval_mode


@HOOKS.register_module()
class OnlineKNNHook(Hook):
    """Every ``interval`` iterations (and after the last), embed a labelled
    bank and labelled queries with the un-mixed encoder and log the weighted
    kNN accuracy (k nearest bank features by cosine similarity, each voting
    ``exp(similarity / T)``) as ``knn_top1`` / ``knn_top5`` (%).

    The numbers go to the visualizer (``vis_data/scalars.json``,
    TensorBoard, ``tools/analysis_tools/plot_log.py``) at step
    ``iteration``, and to the log. They equal
    ``tools/analysis_tools/knn_eval.py`` on the checkpoint of that
    iteration, given the same images, ``feature``, ``k`` and ``T``.

    Args:
        train_dataset (dict): the labelled bank (any mmpretrain
            classification dataset config); its pipeline is replaced by
            ``pipeline``.
        val_dataset (dict): the labelled queries, likewise.
        interval (int): iterations between evaluations.
        num_train, num_val (int, optional): use only the first images of
            each dataset (default: all). A fixed subset, so the curve
            compares like with like.
        k (int), temperature (float): of the weighted vote.
        feature (str): ``'cls'`` token or ``'mean'`` patch token.
        batch_size (int): images per forward pass.
        pipeline (list, optional): default: the config's ``test_pipeline``.

    Runs on the main process only, on the unwrapped model, without
    gradients and without touching the random state; the model's train mode
    is restored after. Not for FSDP, whose unwrapped model holds only a
    shard of the weights.
    """
    priority = 'LOW'

    def __init__(self,
                 train_dataset: dict,
                 val_dataset: dict,
                 interval: int = 500,
                 num_train: Optional[int] = None,
                 num_val: Optional[int] = None,
                 k: int = 20,
                 temperature: float = 0.07,
                 feature: str = 'cls',
                 batch_size: int = 256,
                 pipeline: Optional[list] = None) -> None:
        if interval <= 0:
            raise ValueError(f'OnlineKNNHook interval must be positive, got '
                             f'{interval}')
        if feature not in ('cls', 'mean'):
            raise ValueError(f"OnlineKNNHook feature must be 'cls' or 'mean',"
                             f' got {feature!r}')
        self.datasets = dict(train=train_dataset, val=val_dataset)
        self.limits = dict(train=num_train, val=num_val)
        self.interval = interval
        self.k = k
        self.temperature = temperature
        self.feature = feature
        self.batch_size = batch_size
        self.pipeline = pipeline
        self.loaders = None

    def before_train(self, runner) -> None:
        if isinstance(runner.model, FullyShardedDataParallel):
            raise ValueError('OnlineKNNHook needs the whole model on one '
                             'process: remove it from custom_hooks for FSDP '
                             'runs and use tools/analysis_tools/knn_eval.py '
                             'on the checkpoints')
        if not is_main_process():
            return
        pipeline = self.pipeline or runner.cfg.get('test_pipeline')
        if not pipeline:
            raise ValueError('OnlineKNNHook needs a pipeline: give '
                             'pipeline=... or a top-level test_pipeline in '
                             'the config')
        self.loaders = {}
        for split, dataset in self.datasets.items():
            dataset = copy.deepcopy(dataset)
            dataset['pipeline'] = copy.deepcopy(pipeline)
            limit = self.limits[split]
            if limit is not None:
                dataset['indices'] = limit
            with DefaultScope.overwrite_default_scope('mmpretrain'):
                self.loaders[split] = runner.build_dataloader(dict(
                    dataset=dataset, batch_size=self.batch_size,
                    num_workers=0,
                    sampler=dict(type='DefaultSampler', shuffle=False),
                    collate_fn=dict(type='default_collate')), seed=0)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if (self.every_n_train_iters(runner, self.interval)
                or self.is_last_train_iter(runner)):
            self.evaluate(runner)

    def evaluate(self, runner) -> Optional[dict]:
        """Log and return ``{'knn_top1', 'knn_top5'}`` (main process;
        ``None`` elsewhere)."""
        if not is_main_process():
            return None
        # data loaders draw their base seed from the global generator, and
        # a visualizer backend's first use may draw too: fork it, so
        # training's random numbers do not move
        with torch.random.fork_rng(devices=[]):
            return self._evaluate(runner)

    def _evaluate(self, runner) -> dict:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        with eval_mode(model):
            (bank, bank_labels), (queries, query_labels) = (
                extract_features(model, self.loaders[split], self.feature)
                for split in ('train', 'val'))
        num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
        scores = weighted_knn_scores(bank, bank_labels, queries, num_classes,
                                     k=self.k, temperature=self.temperature)
        accuracy = knn_accuracy(scores, query_labels)
        result = dict(knn_top1=accuracy['top1'], knn_top5=accuracy['top5'])
        step = runner.iter + 1
        runner.visualizer.add_scalars(result, step=step)
        runner.logger.info(
            f'Iter(train) [{step}] online kNN ({len(bank_labels)} bank / '
            f'{len(query_labels)} query images, k={self.k}, '
            f'T={self.temperature}, {self.feature}): '
            f'knn_top1 {result["knn_top1"]:.2f} '
            f'knn_top5 {result["knn_top5"]:.2f}')
        return result
