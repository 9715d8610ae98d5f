"""Exact resumes: data-pipeline randomness keyed by (seed, rank, epoch,
batch, slot), step randomness (mixing, Mixup/CutMix) by (seed, rank, iter)."""
import copy
import gc
import os
import os.path as osp
import random
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import DefaultSampler
from mmengine.dataset import worker_init_fn as mmengine_worker_init_fn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from builders import (RECIPE, assert_same_training_state,
                      pretraining_imagenet, tiny_recipe_overrides,
                      train_recipe)


class RandomDraws(Dataset):
    """Each sample: its index and one draw from random, numpy and torch,
    like a pipeline's crop and flip parameters."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return torch.tensor([
            index, random.randrange(2**30), np.random.randint(2**30),
            int(torch.randint(2**30, ()))])


def _mmengine_loader(num_workers, seed=0):
    """A train loader as mmengine's Runner builds it (DefaultSampler,
    workers seeded once from (seed, rank, worker id), persistent)."""
    dataset = RandomDraws()
    return DataLoader(
        dataset, batch_size=2, drop_last=True,
        sampler=DefaultSampler(dataset, shuffle=True, seed=seed),
        num_workers=num_workers, persistent_workers=num_workers > 0,
        worker_init_fn=partial(mmengine_worker_init_fn,
                               num_workers=num_workers, rank=0, seed=seed)
        if num_workers else None)


def _epochs(loader, epochs):
    batches = {}
    for epoch in epochs:
        loader.batch_sampler.sampler.set_epoch(epoch)
        batches[epoch] = [b.tolist() for b in loader]
    return batches


def test_per_sample_seeding_makes_an_epoch_independent_of_worker_history():
    from mixedae_mm.engine.seeding import sample_seeded_loader
    # without it: persistent workers carry their RNG across epochs, so a
    # fresh process (a resume) draws epoch 2 differently
    plain = _epochs(_mmengine_loader(2), range(3))
    assert _epochs(_mmengine_loader(2), [2])[2] != plain[2]

    seeded = sample_seeded_loader(_mmengine_loader(2), seed=0, rank=0)
    full = _epochs(seeded, range(3))
    assert full[0] != full[1] != full[2]  # still random across epochs
    for workers in (0, 1, 2):
        fresh = sample_seeded_loader(_mmengine_loader(workers), 0, 0)
        assert _epochs(fresh, [2])[2] == full[2], workers
    # an epoch-based run resumed mid-epoch continues at the next batch
    fresh = sample_seeded_loader(_mmengine_loader(2), 0, 0)
    fresh.batch_sampler.skip_batches(1)
    assert _epochs(fresh, [2])[2] == full[2][1:]
    # other seed or rank, other draws
    other = sample_seeded_loader(_mmengine_loader(0), seed=0, rank=1)
    assert _epochs(other, [2])[2] != full[2]


def test_seeded_dataset_forwards_attributes_to_the_wrapped_one():
    from mixedae_mm.engine.seeding import SampleSeededDataset
    inner = RandomDraws()
    inner.metainfo = {'classes': ('a', 'b')}
    wrapped = SampleSeededDataset(inner, seed=0, rank=0)
    assert wrapped.metainfo == inner.metainfo and len(wrapped) == 8
    wrapped.pipeline = 'replaced'  # e.g. mmdet's PipelineSwitchHook
    assert inner.pipeline == 'replaced'
    assert wrapped[(3, (0, 0, 0))].tolist() == wrapped[(3, (0, 0, 0))].tolist()


def test_unbatched_or_iterable_train_loader_is_refused_with_a_clear_message():
    from mixedae_mm.engine.seeding import sample_seeded_loader

    class Stream(IterableDataset):

        def __iter__(self):
            return iter(range(4))

    with pytest.raises(TypeError, match='map-style train dataset'):
        sample_seeded_loader(DataLoader(Stream(), batch_size=2), 0, 0)


def test_replaced_train_loader_has_stopped_its_workers_and_threads():
    """The iteration-based loop opens its loader before StepSeedHook
    replaces it. When the new loader forks its workers, nothing of the old
    one may still run: a fork copies the locks a running thread holds."""
    import threading

    from mmengine.runner import IterBasedTrainLoop
    from mmengine.runner.loops import _InfiniteDataloaderIterator

    from mixedae_mm.engine.seeding import seed_train_loop_data
    threads_before = set(threading.enumerate())
    opened = _InfiniteDataloaderIterator(_mmengine_loader(2))
    next(opened)  # its workers run and its index queues are fed
    old_threads = set(threading.enumerate()) - threads_before
    old_workers = list(opened._iterator._workers)
    assert old_threads and all(w.is_alive() for w in old_workers)

    alive_at_fork = []

    def before_fork():
        if recording:
            alive_at_fork.append(
                [t.name for t in old_threads if t.is_alive()] +
                [w.name for w in old_workers if w.is_alive()])

    recording = True
    os.register_at_fork(before=before_fork)  # stays, inert, after the test
    loop = IterBasedTrainLoop.__new__(IterBasedTrainLoop)
    loop.dataloader, loop.dataloader_iterator = opened._dataloader, opened
    del opened  # the loop holds the only references, as in a run
    try:
        seed_train_loop_data(SimpleNamespace(train_loop=loop, seed=0, rank=0))
        first = next(loop.dataloader_iterator)
    finally:
        recording = False
    assert alive_at_fork == [[], []], alive_at_fork  # at the 2 new forks
    assert first.shape == (2, 4)


@pytest.mark.parametrize('step_seeds,persistent', [
    (True, True), (False, True), (False, False)])
def test_reopened_loader_of_an_infinite_sampler_keeps_drawing(
        step_seeds, persistent):
    """mmseg's and mmdet's iteration-based recipes sample with mmengine's
    InfiniteSampler, which draws from one generator. Before training,
    StepSeedHook and PreemptionHook open a new iterator over the loader in
    place of the loop's first one; when that one was freed it closed the
    sampler's generator, and training stopped with StopIteration at step 1.
    (With persistent workers and no StepSeedHook, the same loader must not
    restart the closed iterator.)
    """
    from mmengine.dataset import InfiniteSampler
    from mmengine.runner import IterBasedTrainLoop
    from mmengine.runner.loops import _InfiniteDataloaderIterator

    from mixedae_mm.engine.preemption import PreemptionHook
    from mixedae_mm.engine.seeding import StepSeedHook
    dataset = RandomDraws()
    loader = DataLoader(dataset, batch_size=2, num_workers=1,
                        persistent_workers=persistent,
                        sampler=InfiniteSampler(dataset, shuffle=True))
    loop = IterBasedTrainLoop.__new__(IterBasedTrainLoop)
    loop.dataloader = loader
    loop.dataloader_iterator = _InfiniteDataloaderIterator(loader)
    runner = SimpleNamespace(train_loop=loop, _train_loop=loop, seed=0,
                             rank=0)
    hooks = [StepSeedHook()] * step_seeds + [PreemptionHook()]
    for stage in ('before_run', 'before_train'):  # in priority order
        for hook in hooks:
            getattr(hook, stage)(runner)
    gc.collect()  # the abandoned iterator is freed
    try:
        batches = [next(loop.dataloader_iterator) for _ in range(3)]
    finally:
        hooks[-1].after_run(runner)
    assert all(batch.shape == (2, 4) for batch in batches)


def _finetune_preprocessor(repo_root):
    from mixedae_mm import downstream
    cfg = Config.fromfile(
        osp.join(repo_root, 'configs/finetune/mixedae_vitb_ft-100e_in1k.py'))
    cfg.merge_from_dict({
        'model.backbone.arch': 'demo-tiny', 'model.backbone.img_size': 32,
        'model.backbone.patch_size': 8, 'model.backbone.init_cfg': None,
        'model.head.in_channels': 192})
    # as mmengine's Runner does
    cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = downstream.build_model(cfg.model, cfg.default_scope)
    augments = [type(a).__name__ for a in
                model.data_preprocessor.batch_augments.augments]
    assert augments == ['Mixup', 'CutMix']  # as shipped
    return model.data_preprocessor


def test_mixup_cutmix_of_a_step_are_a_function_of_seed_rank_and_iteration(
        repo_root):
    """The fine-tune recipe's batch augments (numpy draws in the main
    process) give the same mixed batch at step i after any history."""
    from mmpretrain.structures import DataSample

    from mixedae_mm.engine import StepSeedHook
    preprocessor = _finetune_preprocessor(repo_root)
    gen = torch.Generator().manual_seed(0)
    batch = dict(
        inputs=[torch.randint(0, 256, (3, 32, 32), generator=gen,
                              dtype=torch.uint8) for _ in range(8)],
        data_samples=[DataSample().set_gt_label(i % 4) for i in range(8)])
    hook = StepSeedHook()

    def step(seed, rank, iteration):
        hook.before_train_iter(
            SimpleNamespace(seed=seed, rank=rank, iter=iteration), 0)
        out = preprocessor(copy.deepcopy(batch), training=True)
        # whatever ran in between must not matter
        np.random.rand(5), random.random(), torch.rand(5)
        return out['inputs'], torch.stack(
            [s.gt_score for s in out['data_samples']])

    inputs, scores = step(0, 0, 7)
    plain = preprocessor(copy.deepcopy(batch), training=False)['inputs']
    assert not torch.equal(inputs, plain)  # the batch was mixed
    for _ in range(2):
        again = step(0, 0, 7)
        assert torch.equal(again[0], inputs) and torch.equal(again[1],
                                                             scores)
    assert not torch.equal(step(0, 0, 8)[1], scores)
    assert not torch.equal(step(0, 1, 7)[1], scores)


@pytest.mark.slow
def test_epoch_based_recipe_resumes_from_a_mid_epoch_checkpoint(
        repo_root, tmp_path):
    """Checkpoints every 3 iterations (the middle of epoch 2): resuming from
    iter_3.pth continues at epoch 2's second batch, so the run ends with
    the uninterrupted run's weights (mmengine alone restarts the epoch)."""
    overrides = tiny_recipe_overrides(
        pretraining_imagenet(str(tmp_path / 'imagenet'), size=72)) + [
            'train_cfg.max_epochs=2',
            'default_hooks.checkpoint.by_epoch=False',
            'default_hooks.checkpoint.interval=3']
    full, part = tmp_path / 'full', tmp_path / 'part'
    result = train_recipe(repo_root, RECIPE, full, overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    result = train_recipe(repo_root, RECIPE, part, overrides, '--resume',
                    str(full / 'iter_3.pth'))
    assert result.returncode == 0, result.stderr[-3000:]
    log = open(sorted(part.glob('*/*.log'))[-1]).read()
    assert 'resumed epoch: 1, iter: 3' in log
    assert_same_training_state(full / 'iter_4.pth', part / 'iter_4.pth')
    assert 'continuing at its batch 2 of 2' in log
