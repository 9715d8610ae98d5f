import json
import os.path as osp
from collections import defaultdict
from typing import Dict, List, Optional

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

from .runner import accumulative_counts


def _scalar(value) -> float:
    """A logged value as a float. The summed ``loss`` mmengine returns is
    still attached to the graph: detached first, as converting a tensor
    that requires grad warns (and copies nothing more)."""
    if hasattr(value, 'detach'):
        value = value.detach()
    return float(value)


@HOOKS.register_module()
class TrainingSummaryHook(Hook):
    """Print a compact loss curve and the checkpoint path when training ends.

    Every ``loss*`` / ``homo_acc`` value the model returns is recorded per
    iteration; at the end the run is cut into ``num_bins`` equal stretches
    and the mean of each term per stretch is printed as a table (rank 0),
    followed by the homologous accuracy of the last homologous-attention
    layer (``homo_acc_l<i>``, the layer whose picks the decoder sees) over
    the last ``final_window`` iterations against its chance level, and the
    path of the last checkpoint. Every rank also writes its own values,
    which in distributed training come from its own share of the data, to
    ``work_dir/loss_history_rank<r>.json``.

    Args:
        num_bins (int): Rows of the printed curve.
        keys (list[str], optional): Terms to show; default: every logged
            term whose name starts with ``loss`` plus ``homo_acc``.
        final_window (int): Iterations the final accuracy is averaged over.
    """
    priority = 'LOWEST'

    def __init__(self, num_bins: int = 5,
                 keys: Optional[List[str]] = None,
                 final_window: int = 50) -> None:
        if num_bins < 1 or final_window < 1:
            raise ValueError(f'num_bins and final_window must be >= 1, got '
                             f'{num_bins} and {final_window}')
        self.num_bins = num_bins
        self.keys = keys
        self.final_window = final_window
        self.history: Dict[str, List[float]] = defaultdict(list)
        self.summary: Optional[str] = None
        self._last_layer_key: Optional[str] = None
        self._chance: Optional[float] = None

    def before_train(self, runner) -> None:
        from mmengine.model import is_model_wrapper

        from mixedae_mm.ops import homologous_accuracy_chance
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        backbone = getattr(model, 'backbone', None)
        layers = getattr(backbone, 'homo_attn_layers', None)
        if layers and getattr(backbone, 'mixing', False):
            self._last_layer_key = f'homo_acc_l{max(layers)}'
            self._chance = homologous_accuracy_chance(
                backbone.num_patches, backbone.group_size)

    def _wanted(self, key: str) -> bool:
        if self.keys is not None:
            return key in self.keys
        return key.startswith('loss') or key == 'homo_acc'

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        for key, value in (outputs or {}).items():
            if self._wanted(key) or key == self._last_layer_key:
                self.history[key].append(_scalar(value))

    def after_train(self, runner) -> None:
        if not self.history:
            return
        path = osp.join(runner.work_dir, f'loss_history_rank{runner.rank}.json')
        with open(path, 'w') as f:
            json.dump(dict(last_iter=runner.iter, history=self.history), f)
        if runner.rank != 0:
            return
        self.summary = self.format_curve(runner.iter)
        final = self.final_accuracy()
        if final is not None:
            key, window, value = final
            self.summary += (
                f'\nhomologous accuracy, last homologous layer ({key}), mean '
                f'of the last {window} iterations: {value:.4f} = '
                f'{value / self._chance:.2f} x chance {self._chance:g}')
        last = osp.join(runner.work_dir, 'last_checkpoint')
        if osp.exists(last):
            with open(last) as f:
                self.summary += f'\ncheckpoint: {f.read().strip()}'
        runner.logger.info('training summary\n' + self.summary)

    def final_accuracy(self):
        """``(key, iterations, mean)`` of the last homologous layer's
        accuracy at the end of the run; ``None`` without one."""
        values = self.history.get(self._last_layer_key or '')
        if not values:
            return None
        window = values[-self.final_window:]
        return self._last_layer_key, len(window), sum(window) / len(window)

    def format_curve(self, total_iters: int) -> str:
        keys = sorted(self.history, key=lambda k: (k != 'loss', k))
        count = min(len(v) for v in self.history.values())
        start = total_iters - count
        bins = min(self.num_bins, count)
        widths = [max(10, len(k)) for k in keys]
        header = f"{'iterations':>13} " + ' '.join(
            f'{k:>{w}}' for k, w in zip(keys, widths))
        rows = [header]
        for i in range(bins):
            lo, hi = i * count // bins, (i + 1) * count // bins
            means = [sum(self.history[k][lo:hi]) / (hi - lo) for k in keys]
            span = f'{start + lo + 1}-{start + hi}'
            rows.append(f'{span:>13} ' +
                        ' '.join(f'{m:>{w}.4f}'
                                 for m, w in zip(means, widths)))
        return '\n'.join(rows)


@HOOKS.register_module()
class TF32Hook(Hook):
    """Run the fp32 work of a mixed-precision recipe (what bf16 autocast
    leaves in fp32, and every matmul of a run without AMP) on TF32 tensor
    cores where the GPU has them (Ampere and newer).

    PyTorch leaves TF32 matmuls off by default; convolutions through cuDNN
    have it on by default, set here too so that the recipe does not depend on
    a default. The previous values are restored when the run ends, so a
    process that trains and then does something else gets its own settings
    back. On a machine without CUDA nothing is changed (the flags do not
    touch CPU kernels, and CPU tests keep exact fp32 arithmetic).
    """
    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._previous: Optional[tuple] = None

    def before_run(self, runner) -> None:
        import torch
        if not torch.cuda.is_available():
            return
        self._previous = (torch.backends.cuda.matmul.allow_tf32,
                          torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        runner.logger.info('TF32 on for fp32 matmuls and convolutions')

    def after_run(self, runner) -> None:
        import torch
        if self._previous is None:
            return
        (torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = self._previous
        self._previous = None


@HOOKS.register_module()
class BatchLRReportHook(Hook):
    """Print the real total batch and base learning rate when training
    starts, and warn when they differ from the recipe's.

    A recipe states its lr for the total batch ``auto_scale_lr.
    base_batch_size``. With ``auto_scale_lr.enable=True`` (the recipes'
    default) the lr is multiplied by real batch / base batch before
    training; the line printed here shows the result, whichever launcher
    started the run. The total batch is the batch of one optimizer update:
    GPUs (world size) x per-GPU batch x ``optim_wrapper.
    accumulative_counts``. mmengine's own scaling leaves the accumulation
    out (:class:`MixedAERunner`, which tools/train.py uses, counts it): an
    lr scaled without the accumulation is reported.
    """
    priority = 'LOW'

    def before_train(self, runner) -> None:
        # the config's value, as mmengine's auto_scale_lr reads it (the
        # built loader may batch through a batch_sampler, e.g. after
        # StepSeedHook's rebuild, and then has no batch_size)
        per_gpu = runner.cfg.train_dataloader.batch_size
        world = runner.world_size
        accumulate = accumulative_counts(runner.cfg.get('optim_wrapper'))
        per_step = world * per_gpu  # one forward/backward on every GPU
        total = per_step * accumulate
        base_lr = self.base_lr(runner)
        recipe_lr = runner.cfg.get('optim_wrapper', {}).get(
            'optimizer', {}).get('lr')
        # (from the config: mmengine's FlexibleRunner keeps no auto_scale_lr)
        scale_cfg = runner.cfg.get('auto_scale_lr') or {}
        recipe_batch = scale_cfg.get('base_batch_size')
        split = f'{world} GPU(s) x {per_gpu}' + (
            f' x {accumulate} accumulated' if accumulate != 1 else '')
        recipe_lr_text = 'unknown' if recipe_lr is None else \
            f'{recipe_lr:.4g}'
        runner.logger.info(
            f'total batch {total} ({split}), lr {base_lr:.4g}; recipe: batch '
            f'{recipe_batch}, lr {recipe_lr_text}')
        if recipe_batch is None:
            return
        scaling = scale_cfg.get('enable', False)
        if scaling and accumulate != 1 and recipe_lr is not None:
            # what mmengine's own Runner / strategies give: the lr of
            # GPUs x per-GPU batch, the accumulation left out
            uncounted = recipe_lr * per_step / recipe_batch
            if abs(base_lr - uncounted) <= 1e-6 * uncounted:
                runner.logger.warning(
                    f'lr {base_lr:.4g} is the recipe\'s {recipe_lr_text} '
                    f'scaled to {per_step} images, not to the '
                    f'total batch {total}: this runner '
                    f'({type(runner).__name__}) leaves accumulative_counts '
                    'out of auto_scale_lr. Train with tools/train.py '
                    '(MixedAERunner, or MixedAEFSDPStrategy under '
                    'FlexibleRunner), or '
                    f'multiply optim_wrapper.optimizer.lr by {accumulate}.')
        if total == recipe_batch:
            return
        if not scaling:
            runner.logger.warning(
                f'total batch {total} differs from the recipe\'s '
                f'{recipe_batch} and auto_scale_lr is disabled: the lr stays '
                f'{base_lr:.4g}, the recipe\'s value for batch {recipe_batch}'
                '. Enable it (auto_scale_lr.enable=True or --auto-scale-lr) '
                'to scale the lr linearly, or change the batch.')
        else:
            runner.logger.warning(
                f'total batch {total} differs from the recipe\'s '
                f'{recipe_batch}: lr scaled linearly to {base_lr:.4g} '
                f'(recipe: {recipe_lr_text} for {recipe_batch}); results may '
                'differ from the recipe\'s.')

    @staticmethod
    def base_lr(runner) -> float:
        """The largest lr of any parameter group before warm-up: the
        recipe's base lr after scaling (layer-wise decay only lowers the
        lr of earlier layers)."""
        groups = runner.optim_wrapper.optimizer.param_groups
        return max(g.get('initial_lr', g['lr']) for g in groups)
