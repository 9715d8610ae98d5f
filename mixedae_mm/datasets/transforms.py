"""Image loading that names the file it cannot read.

mmcv's ``LoadImageFromFile`` stops a run on a zero-byte, truncated or
non-image file with e.g. ``cv2.error ... !buf.empty() in function
'imdecode_'`` and never says which file. :class:`CheckedLoadImageFromFile`
raises :class:`UnreadableImageError` with the path instead, or, with
``on_unreadable='skip'``, returns None, which makes mmengine's training
datasets draw another sample, and records the path.

Data loader workers are separate processes, so each process appends its
records to its own file ``<record_dir>/<main pid>-<pid>.txt`` (the main pid
is the process that built the dataset, i.e. the training process of this
rank); :class:`UnreadableImageReportHook` in that process reads them back
and reports the files at the end of every epoch and of training.

:func:`check_image_loading` switches every ``LoadImageFromFile`` of a
config's data loaders to this class, inherited pipelines included, so no
recipe restates its pipelines; ``tools/train.py`` and ``tools/test.py`` call
it, with the config's ``unreadable_images`` (``'stop'`` or ``'skip'``).
"""
import glob
import os
import os.path as osp
from collections import Counter
from typing import Dict, Optional

from mmcv.transforms import LoadImageFromFile
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS, TRANSFORMS

POLICIES = ('stop', 'skip')


class UnreadableImageError(RuntimeError):
    """An image file is empty, corrupt or not an image."""


def _reason(path: str, err: Exception) -> str:
    try:
        size = os.path.getsize(path)
    except OSError:
        return f'{type(err).__name__}: {err}'.splitlines()[0]
    if size == 0:
        return 'the file is empty (0 bytes)'
    lines = [line for line in str(err).splitlines() if line.strip()]
    return (f'{size} bytes that do not decode as an image '
            f'({type(err).__name__}: {lines[-1] if lines else ""})')


@TRANSFORMS.register_module()
class CheckedLoadImageFromFile(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` that names a file it cannot read.

    Args:
        on_unreadable (str): ``'stop'``: raise :class:`UnreadableImageError`
            with the path; ``'skip'``: record the path and return None (only
            for training datasets, which then draw another sample).
        record_dir (str, optional): Where ``'skip'`` records the paths.
        **kwargs: ``LoadImageFromFile``'s arguments, except ``ignore_empty``.
    """

    def __init__(self,
                 *args,
                 on_unreadable: str = 'stop',
                 record_dir: Optional[str] = None,
                 **kwargs) -> None:
        if on_unreadable not in POLICIES:
            raise ValueError(f'on_unreadable must be one of {POLICIES}, got '
                             f'{on_unreadable!r}')
        if kwargs.get('ignore_empty'):
            raise ValueError(
                "ignore_empty=True would drop unreadable images silently: "
                "use on_unreadable='skip', which reports them")
        if on_unreadable == 'skip' and record_dir is None:
            raise ValueError("on_unreadable='skip' needs a record_dir")
        kwargs['ignore_empty'] = False
        super().__init__(*args, **kwargs)
        self.on_unreadable = on_unreadable
        self.record_dir = record_dir
        self.owner_pid = os.getpid()  # workers inherit it

    def transform(self, results: dict) -> Optional[dict]:
        try:
            return super().transform(results)
        except Exception as err:  # decoders raise anything on bad bytes
            path = results.get('img_path', '<unknown>')
            reason = _reason(path, err)
        if self.on_unreadable == 'skip':
            record_unreadable(self.record_dir, self.owner_pid, path, reason)
            return None
        raise UnreadableImageError(
            f'cannot read image {path}: {reason}. Replace or delete the '
            'file, or train on without it: --cfg-options '
            'unreadable_images=skip (skipped files are listed at the end)')


def record_unreadable(record_dir: str, owner_pid: int, path: str,
                      reason: str) -> None:
    os.makedirs(record_dir, exist_ok=True)
    record = osp.join(record_dir, f'{owner_pid}-{os.getpid()}.txt')
    with open(record, 'a') as f:  # one short line: a single write
        f.write(f'{path}\t{reason}\n')


def read_unreadable(record_dir: str, owner_pid: int) -> Dict[str, tuple]:
    """``{path: (times skipped, reason)}`` recorded by one training
    process and its workers."""
    counts, reasons = Counter(), {}
    for record in sorted(glob.glob(osp.join(record_dir,
                                            f'{owner_pid}-*.txt'))):
        with open(record) as f:
            for line in f:
                path, _, reason = line.rstrip('\n').partition('\t')
                counts[path] += 1
                reasons[path] = reason
    return {path: (counts[path], reasons[path]) for path in sorted(counts)}


@HOOKS.register_module()
class UnreadableImageReportHook(Hook):
    """Report the images that ``CheckedLoadImageFromFile`` skipped: a
    warning after each epoch with new ones, and at the end of training the
    full list, also written to ``<work_dir>/unreadable_images.txt``."""
    priority = 'LOW'

    def __init__(self, record_dir: str) -> None:
        self.record_dir = record_dir
        self.reported = 0
        self.skipped: Dict[str, tuple] = {}

    def _collect(self) -> Dict[str, tuple]:
        self.skipped = read_unreadable(self.record_dir, os.getpid())
        return self.skipped

    def after_train_epoch(self, runner) -> None:
        skipped = self._collect()
        if len(skipped) > self.reported:
            runner.logger.warning(
                f'{len(skipped)} unreadable images skipped so far (listed at '
                'the end of training)')
            self.reported = len(skipped)

    def after_train(self, runner) -> None:
        skipped = self._collect()
        if not skipped:
            return
        lines = [f'{path}\t{reason} (skipped {n}x)'
                 for path, (n, reason) in skipped.items()]
        with open(osp.join(runner.work_dir, 'unreadable_images.txt'),
                  'w') as f:
            f.write('\n'.join(lines) + '\n')
        runner.logger.warning(
            f'{len(skipped)} unreadable images were skipped (also in '
            f'{osp.join(runner.work_dir, "unreadable_images.txt")}):\n' +
            '\n'.join(lines))


def _use_checked_loader(node, policy: str, record_dir: str) -> None:
    """Switch every ``LoadImageFromFile`` in the pipelines under ``node``
    (datasets, dataset wrappers) to ``CheckedLoadImageFromFile``."""
    if isinstance(node, (list, tuple)):
        for item in node:
            _use_checked_loader(item, policy, record_dir)
        return
    if not isinstance(node, dict):
        return
    if node.get('type') == 'LoadImageFromFile':
        node['type'] = 'CheckedLoadImageFromFile'
        node['on_unreadable'] = policy
        if policy == 'skip':
            node['record_dir'] = record_dir
        return
    for value in node.values():
        _use_checked_loader(value, policy, record_dir)


def check_image_loading(cfg) -> None:
    """Make the data loaders of ``cfg`` (an mmengine ``Config`` whose
    ``work_dir`` is set) name unreadable images; ``cfg.unreadable_images``
    ``'skip'`` skips them in training and lists them at the end instead
    (evaluation always stops: its datasets cannot draw a replacement)."""
    policy = cfg.get('unreadable_images', 'stop')
    if policy not in POLICIES:
        raise ValueError(f'unreadable_images must be one of {POLICIES}, got '
                         f'{policy!r}')
    record_dir = osp.join(cfg.work_dir, 'unreadable_images')
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if isinstance(loader, dict):
            _use_checked_loader(loader.get('dataset'),
                                policy if split == 'train' else 'stop',
                                record_dir)
    if policy == 'skip':
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
            dict(type='UnreadableImageReportHook', record_dir=record_dir)
        ]
