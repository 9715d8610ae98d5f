import json
import os.path as osp
from collections import defaultdict
from typing import Dict, List, Optional

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class TrainingSummaryHook(Hook):
    """Print a compact loss curve and the checkpoint path when training ends.

    Every ``loss*`` / ``homo_acc`` value the model returns is recorded per
    iteration; at the end the run is cut into ``num_bins`` equal stretches
    and the mean of each term per stretch is printed as a table (rank 0),
    followed by the path of the last checkpoint. Every rank also writes its
    own values, which in distributed training come from its own share of
    the data, to ``work_dir/loss_history_rank<r>.json``.

    Args:
        num_bins (int): Rows of the printed curve.
        keys (list[str], optional): Terms to show; default: every logged
            term whose name starts with ``loss`` plus ``homo_acc``.
    """
    priority = 'LOWEST'

    def __init__(self, num_bins: int = 5,
                 keys: Optional[List[str]] = None) -> None:
        if num_bins < 1:
            raise ValueError(f'num_bins must be >= 1, got {num_bins}')
        self.num_bins = num_bins
        self.keys = keys
        self.history: Dict[str, List[float]] = defaultdict(list)
        self.summary: Optional[str] = None

    def _wanted(self, key: str) -> bool:
        if self.keys is not None:
            return key in self.keys
        return key.startswith('loss') or key == 'homo_acc'

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        for key, value in (outputs or {}).items():
            if self._wanted(key):
                self.history[key].append(float(value))

    def after_train(self, runner) -> None:
        if not self.history:
            return
        path = osp.join(runner.work_dir, f'loss_history_rank{runner.rank}.json')
        with open(path, 'w') as f:
            json.dump(dict(last_iter=runner.iter, history=self.history), f)
        if runner.rank != 0:
            return
        self.summary = self.format_curve(runner.iter)
        last = osp.join(runner.work_dir, 'last_checkpoint')
        if osp.exists(last):
            with open(last) as f:
                self.summary += f'\ncheckpoint: {f.read().strip()}'
        runner.logger.info('training summary\n' + self.summary)

    def format_curve(self, total_iters: int) -> str:
        keys = sorted(self.history, key=lambda k: (k != 'loss', k))
        count = min(len(v) for v in self.history.values())
        start = total_iters - count
        bins = min(self.num_bins, count)
        header = f"{'iterations':>13} " + ' '.join(f'{k:>10}' for k in keys)
        rows = [header]
        for i in range(bins):
            lo, hi = i * count // bins, (i + 1) * count // bins
            means = [sum(self.history[k][lo:hi]) / (hi - lo) for k in keys]
            span = f'{start + lo + 1}-{start + hi}'
            rows.append(f'{span:>13} ' +
                        ' '.join(f'{m:>10.4f}' for m in means))
        return '\n'.join(rows)
