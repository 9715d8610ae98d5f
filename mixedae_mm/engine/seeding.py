"""Data-pipeline randomness that does not depend on worker state.

mmengine seeds each data-loading worker once, from ``(seed, rank,
worker_id)``. With persistent workers a worker's RNG then runs on across
epochs, so the crops and flips of epoch ``e`` depend on everything the
worker drew before; a resumed run starts fresh workers and draws other ones.

Here the randomness travels with the index instead: the train loader is
rebuilt so that its batch sampler yields ``(index, key)`` pairs, ``key =
(pass, batch, slot)``, and the dataset wrapper seeds ``random``, numpy and
torch from ``(seed, rank, key)`` before it runs the pipeline. ``pass`` is
the sampler's epoch (``set_epoch``; mmengine's ``DistSamplerSeedHook`` and
its iteration-based loop set it), or a count of passes for samplers without
one (``InfiniteSampler``: one endless pass). A sample's augmentation is then
the same with any number of workers, persistent or not, on any restart.

The model's randomness (mixing partitions, masks, dropout, drop path) is
seeded the same way: mmengine re-seeds on resume but does not restore RNG
states, so a resumed run would draw other mixing partitions than an
uninterrupted one. :class:`StepSeedHook` makes it a function of ``(seed,
rank, iteration)``, which needs no state in the checkpoint.
"""
import hashlib
import inspect
import random
from typing import Iterator, List, Tuple

import numpy as np
import torch
from mmengine.dataset import InfiniteSampler
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
# the iteration-based loop's wrapper of its loader (mmengine 0.10)
from mmengine.runner.loops import _InfiniteDataloaderIterator
from mmpretrain.registry import HOOKS
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

#: key of one sample in the loader's stream: (pass, batch, slot in batch)
SampleKey = Tuple[int, int, int]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a function of ``parts`` only."""
    text = '/'.join(str(int(p)) for p in parts)
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'little') & (2**63 - 1)


def seed_all(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and, when
    initialised, CUDA; no device sync)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class SampleKeyBatchSampler(Sampler):
    """Wrap a batch sampler: each index comes with its :data:`SampleKey`.

    ``sampler`` is the wrapped batch sampler's sampler, where mmengine's
    hooks look for ``set_epoch``. ``skip_batches(n)`` makes the next pass
    start at batch ``n`` (a mid-epoch resume) without loading the skipped
    batches; their keys are not reused.
    """

    def __init__(self, batch_sampler) -> None:
        self.batch_sampler = batch_sampler
        self.sampler = getattr(batch_sampler, 'sampler', None)
        self._passes = 0
        self._skip = 0

    def skip_batches(self, count: int) -> None:
        self._skip = count

    def __iter__(self) -> Iterator[List[Tuple[int, SampleKey]]]:
        pass_id = getattr(self.sampler, 'epoch', self._passes)
        self._passes += 1
        skip, self._skip = self._skip, 0
        for batch_id, batch in enumerate(self.batch_sampler):
            if batch_id < skip:
                continue
            yield [(index, (pass_id, batch_id, slot))
                   for slot, index in enumerate(batch)]

    def __len__(self) -> int:
        return len(self.batch_sampler)


class SampleSeededDataset(Dataset):
    """Seed all RNGs from ``(seed, rank, key)`` before loading a sample.

    Indexed with ``(index, key)`` by :class:`SampleKeyBatchSampler`; a plain
    index loads unseeded. Attributes are read from and written to the
    wrapped dataset (``metainfo``, ``pipeline``, ...), so hooks that look at
    ``runner.train_dataloader.dataset`` see the real one.
    """
    _own = ('dataset', 'seed', 'rank')

    def __init__(self, dataset, seed: int, rank: int) -> None:
        object.__setattr__(self, 'dataset', dataset)
        object.__setattr__(self, 'seed', int(seed))
        object.__setattr__(self, 'rank', int(rank))

    def __getitem__(self, item):
        if isinstance(item, tuple):
            index, key = item
            seed_all(derive_seed(self.seed, self.rank, *key))
            return self.dataset[index]
        return self.dataset[item]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):
        # not for dunders or our own fields: unpickling (spawned workers)
        # looks these up before __init__ has run
        if name.startswith('__') or name in self._own:
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __setattr__(self, name, value) -> None:
        if name in self._own:
            object.__setattr__(self, name, value)
        else:
            setattr(self.dataset, name, value)


#: DataLoader arguments that the rebuilt loader copies from the original
_LOADER_ARGS = [
    name for name in inspect.signature(DataLoader.__init__).parameters
    if name not in ('self', 'dataset', 'batch_size', 'shuffle', 'sampler',
                    'batch_sampler', 'drop_last')
]


def sample_seeded_loader(loader: DataLoader, seed: int,
                         rank: int) -> DataLoader:
    """``loader`` with per-sample seeding (same workers, collate, batches).

    A loader that already seeds per sample is returned as it is.
    """
    if isinstance(loader.dataset, SampleSeededDataset):
        return loader
    if isinstance(loader.dataset, IterableDataset) or (
            loader.batch_sampler is None):
        raise TypeError(
            'StepSeedHook needs a map-style train dataset loaded in batches '
            '(train_dataloader with batch_size or batch_sampler); got '
            f'{type(loader.dataset).__name__} with batch_sampler='
            f'{loader.batch_sampler!r}. Remove StepSeedHook from '
            'custom_hooks for such a loader (its resumes are then not exact).')
    kwargs = {name: getattr(loader, name) for name in _LOADER_ARGS
              if hasattr(loader, name)}
    return DataLoader(
        SampleSeededDataset(loader.dataset, seed, rank),
        batch_sampler=SampleKeyBatchSampler(loader.batch_sampler),
        **kwargs)


#: seconds to wait for a closed loader's queue threads; they end at once
_QUEUE_THREAD_TIMEOUT_S = 60


def close_loader_iterator(iterator) -> None:
    """Stop a DataLoader iterator's workers and wait until its threads end.

    Dropping the last reference also stops the workers, but torch leaves the
    threads that feed their index queues to end on their own, a few
    milliseconds later: while the next loader is forking its workers. A
    ``fork()`` copies every lock as it is at that moment, those an ending
    thread holds in the C library included, and a child that needs one waits
    forever. A new worker of a 2-process test run hung right after its fork,
    once in about 14 runs, with such a thread alive in its parent.
    """
    shutdown = getattr(iterator, '_shutdown_workers', None)
    if shutdown is None:
        return  # loading in the main process: no workers, no threads
    shutdown()
    for queue in iterator._index_queues:
        feeder = queue._thread  # None if nothing was ever put
        if feeder is None:
            continue
        feeder.join(_QUEUE_THREAD_TIMEOUT_S)
        if feeder.is_alive():
            raise RuntimeError(
                'A closed data loader\'s queue thread did not end within '
                f'{_QUEUE_THREAD_TIMEOUT_S} s; starting the next loader\'s '
                'workers now could hang. Set train_dataloader.num_workers=0 '
                'to load in the main process, and report this.')


def seed_train_loop_data(runner) -> None:
    """Give ``runner.train_loop`` a per-sample seeded loader.

    Called before training starts, after a resume has restored the epoch
    and iteration: an epoch-based run resumed from a mid-epoch checkpoint
    continues with the epoch's next batch (mmengine would restart the
    epoch); an iteration-based one is replayed by mmengine's loop, which
    draws the skipped batches again.
    """
    loop = runner.train_loop
    loader = sample_seeded_loader(loop.dataloader, runner.seed, runner.rank)
    if loader is loop.dataloader:
        return
    if isinstance(loop, IterBasedTrainLoop):
        reopen_train_loader(loop, loader)  # the loop opened the old one
    else:
        loop.dataloader = loader
    if isinstance(loop, EpochBasedTrainLoop):
        done = runner.iter - runner.epoch * len(loader)
        if 0 < done < len(loader):
            loader.batch_sampler.skip_batches(done)
            print_log(
                f'Resumed in the middle of epoch {runner.epoch + 1}: '
                f'continuing at its batch {done + 1} of {len(loader)}.',
                logger='current')


def reopen_train_loader(loop: IterBasedTrainLoop, loader: DataLoader
                        ) -> None:
    """Give an iteration-based loop a new iterator over ``loader`` (the
    old loader or its replacement), in place of the one the loop opened
    when it was built: the old iterator's workers and threads are stopped
    first (:func:`close_loader_iterator`), and mmengine's
    ``InfiniteSampler`` starts over (:func:`restart_infinite_sampler`)."""
    old = loop.dataloader_iterator._iterator
    close_loader_iterator(old)
    if getattr(loader, '_iterator', None) is old:
        # a loader with persistent workers would restart the closed one
        loader._iterator = None
    restart_infinite_sampler(getattr(loader.batch_sampler, 'sampler', None))
    loop.dataloader = loader
    loop.dataloader_iterator = _InfiniteDataloaderIterator(loader)


def restart_infinite_sampler(sampler) -> None:
    """Start mmengine's ``InfiniteSampler`` over from its first index.

    It draws every pass from one generator made in its ``__init__``; when
    an abandoned iterator over it is freed, that generator is closed too
    (``yield from`` passes the close on), and a new iterator ends at once:
    every mmseg / mmdet iteration-based recipe stopped with
    ``StopIteration`` at its first step. A new generator of the same seed
    gives the stream a fresh run starts with. Other samplers start over by
    themselves.
    """
    if isinstance(sampler, InfiniteSampler):
        sampler.indices = sampler._indices_of_rank()


def step_seed(seed: int, rank: int, iteration: int) -> int:
    """A 63-bit seed for one rank's training step."""
    return derive_seed(seed, rank, iteration)


@HOOKS.register_module()
class StepSeedHook(Hook):
    """Make a run's randomness independent of where it was (re)started.

    Before every step it seeds torch, numpy and ``random`` from ``(seed,
    rank, iteration)``: the mixing partitions, masks, dropout, drop path and
    batch augments (Mixup/CutMix draw from numpy) of step ``i`` are the same
    whether or not the run was interrupted. Before training it rebuilds the
    train loader so that each sample's pipeline is seeded from ``(seed,
    rank, epoch, batch, slot)`` (:mod:`mixedae_mm.engine.seeding`), not from
    the state of a data-loading worker. Nothing is stored in checkpoints.
    """
    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        seed_train_loop_data(runner)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        seed_all(step_seed(runner.seed, runner.rank, runner.iter))
