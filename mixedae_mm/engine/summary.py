"""The loss table a run prints when it ends."""
import json
import os.path as osp
from collections import defaultdict
from typing import Dict, List, Optional

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


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
