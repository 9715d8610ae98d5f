import contextlib
import importlib.util
import os
import os.path as osp
import struct
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# tests, and the tools they start, import the package from this clone,
# installed or not
sys.path.insert(0, ROOT)
os.environ['PYTHONPATH'] = os.pathsep.join(
    p for p in (ROOT, os.environ.get('PYTHONPATH')) if p)


#: --cfg-options that load the data in the training process (no workers)
IN_PROCESS_LOADING = ['train_dataloader.num_workers=0',
                      'train_dataloader.persistent_workers=False']


def run_python(*args, check: bool = True, timeout: int = 600, env=None,
               cwd: str = ROOT) -> subprocess.CompletedProcess:
    """``python ARGS`` in a new interpreter, from the clone's root by
    default, one intra-op thread (tests run side by side); with ``check``
    a non-zero exit fails the test with the end of its stderr."""
    result = subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
        text=True, timeout=timeout,
        env=dict(os.environ, OMP_NUM_THREADS='1', **(env or {})))
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def load_tool(relative_path: str):
    """``tools/<relative_path>`` as a module (tools/ is no package), for
    tests that call a command line's functions in-process."""
    path = osp.join(ROOT, 'tools', relative_path)
    name = 'tool_' + relative_path.replace('/', '_')[:-len('.py')]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def call_tool(relative_path: str, *args,
              capsys) -> subprocess.CompletedProcess:
    """``python tools/<relative_path> ARGS`` from the clone's root, but
    in-process (no new interpreter), for a test that checks what the
    command answers: its exit status, stdout and stderr, a ``SystemExit``
    message printed to stderr with status 1 as the interpreter does. Any
    other exception propagates: a command line must not end in one."""
    status = 0
    with contextlib.chdir(ROOT):
        try:
            load_tool(relative_path).main([str(a) for a in args])
        except SystemExit as stop:
            status = stop.code
    if isinstance(status, str):
        print(status, file=sys.stderr)
        status = 1
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, status or 0, out.out, out.err)


def readme_sentences() -> str:
    """The README's text with every line break and run of spaces made one
    space, so a test can look for a sentence however it is wrapped."""
    with open(osp.join(ROOT, 'README.md')) as f:
        return ' '.join(f.read().split())


def assert_results_page_shows(table: str, after: str = '') -> None:
    """docs/results.md shows every row and difference line of a generated
    study table (``results.md``), in the part of the page from the heading
    ``after`` on (the whole page by default)."""
    with open(osp.join(ROOT, 'docs', 'results.md')) as f:
        page = f.read()
    page = page[page.index(after):]
    for line in table.splitlines():
        if line.startswith(('|', '- ')):
            assert line in page, line


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'slow: takes 3 s or more here (CI runs it; the edit loop: '
        '-m "not slow")')


#: the test files that take longest, longest first (per-file totals of the
#: suite's --durations on 2 cores, 2026-12-06). tools/run_tests.sh hands
#: whole files to its workers in collection order: started first, a long
#: file cannot be the one that still runs after the others have finished.
LONGEST_FILES = (
    'test_preemption.py', 'test_study.py', 'test_train.py',
    'test_use_the_model.py', 'test_launch.py', 'test_dense_study.py',
    'test_transfer.py', 'test_durable_checkpoints.py', 'test_cpu_kernels.py',
    'test_published_weights.py', 'test_unreadable_images.py',
    'test_gpu_check.py',
)


def pytest_collection_modifyitems(config, items):
    """The files of :data:`LONGEST_FILES` first, in its order; the others
    after them in their usual order (a stable sort keeps each file's tests
    in theirs)."""
    missing = [name for name in LONGEST_FILES
               if not osp.exists(osp.join(ROOT, 'tests', name))]
    if missing:
        raise pytest.UsageError(f'tests/conftest.py LONGEST_FILES names '
                                f'{missing}, which tests/ no longer has: '
                                f'update the list')
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope='session')
def repo_root():
    return ROOT


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """The embedded demo dataset, built once per test session."""
    from mixedae_mm.datasets import build_demo_dataset
    return build_demo_dataset(
        str(tmp_path_factory.mktemp('demo_photos')), crops_per_photo=4,
        crop_size=80)


#: the demo model's encoder, which the transfer tests load (patch 8, 64px);
#: MixedAEViT knows it by name: ``arch='demo-tiny'``
DEMO_ARCH = dict(
    embed_dims=192, num_layers=6, num_heads=3, feedforward_channels=768)


def short_demo_run(work_dir, data_root, iters, batch_size, name, edit=None):
    """The demo config shortened to ``iters`` iterations in one process,
    checkpointing at the end; returns the mmengine ``Runner`` (not run).
    ``edit(cfg)``, if given, changes the config further before the build."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    import mixedae_mm  # noqa: F401
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/demo/mixedae_vit-tiny-p8_demo.py'))
    cfg.work_dir = str(work_dir)
    cfg.train_dataloader.dataset.data_root = data_root
    cfg.train_dataloader.batch_size = batch_size
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    cfg.train_cfg.max_iters = iters
    cfg.default_hooks.checkpoint.interval = iters
    cfg.custom_hooks = [h for h in cfg.custom_hooks
                        if h['type'] != 'TrainingSummaryHook']
    cfg.experiment_name = name
    if edit is not None:
        edit(cfg)
    return Runner.from_cfg(cfg)


@pytest.fixture(scope='session')
def demo_work_dir(tmp_path_factory, demo_data):
    """One trained demo work dir for the tests that only read one: the demo
    config trained for 2 iterations of 8 demo photos, logging every
    iteration and checkpointing at the end (``iter_2.pth``), as
    tools/train.py leaves it."""
    def log_every_iteration(cfg):
        cfg.default_hooks.logger.interval = 1

    work_dir = tmp_path_factory.mktemp('demo_work_dir')
    short_demo_run(work_dir, demo_data, iters=2, batch_size=8,
                   name='demo_work_dir', edit=log_every_iteration).train()
    return work_dir


@pytest.fixture(scope='session')
def pretrained_checkpoint(demo_work_dir):
    """A real MixedAE pretraining checkpoint: the demo config trained for 2
    iterations on the demo photos (mmengine format, ``backbone.*`` keys),
    the last one of ``demo_work_dir``."""
    path = osp.join(str(demo_work_dir), 'iter_2.pth')
    assert osp.exists(path)
    return path


def write_idx(path, tensor):
    """An IDX file (uncompressed) of a uint8 tensor."""
    import torch
    magic = 0x0800 + tensor.dim()
    with open(path, 'wb') as f:
        f.write(struct.pack('>i', magic))
        f.write(struct.pack('>' + 'i' * tensor.dim(), *tensor.shape))
        f.write(tensor.to(torch.uint8).numpy().tobytes())


@pytest.fixture(scope='module')
def small_fashion_mnist(tmp_path_factory):
    """The first 200 training and 100 test images of the real data set,
    uncompressed (the packaged files are .gz: both forms are read)."""
    from mixedae_mm.datasets import DEBIAN_FASHION_MNIST, load_fashion_mnist
    root = tmp_path_factory.mktemp('fashion-mnist')
    for split, count, prefix in (('train', 200, 'train'),
                                 ('test', 100, 't10k')):
        images, labels = load_fashion_mnist(DEBIAN_FASHION_MNIST, split)
        write_idx(root / f'{prefix}-images-idx3-ubyte', images[:count])
        write_idx(root / f'{prefix}-labels-idx1-ubyte', labels[:count])
    return str(root)


@pytest.fixture(autouse=True)
def isolated_mmengine_globals():
    """Each test starts with the mmengine globals it found and leaves none of
    its own behind:

    - the default scope: in-process inferencers and runners of mmseg/mmdet
      set theirs globally, and a later build through mmpretrain's registry
      would then look in mmdet's;
    - the loggers a test made: an ``MMLogger`` writes to the output that was
      current when it was made, which for a test that reads its output
      (``capsys``) is closed after the test; a later test logging through
      it (mmengine logs to its latest logger) would get
      ``--- Logging error ---`` and a traceback in its stderr.
    """
    from mmengine.logging import MMLogger
    from mmengine.registry import DefaultScope
    saved_scope = dict(DefaultScope._instance_dict)
    loggers_before = set(MMLogger._instance_dict)
    yield
    DefaultScope._instance_dict = saved_scope
    for name in set(MMLogger._instance_dict) - loggers_before:
        logger = MMLogger._instance_dict.pop(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
