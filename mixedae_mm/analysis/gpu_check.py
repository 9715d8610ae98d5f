"""The GPU check: MixedAE against MAE, and the ViT-B recipe training and
resuming, written to one JSON and one log.

``tools/gpu_check.sh`` installs the carried OpenMMLab wheels
(``gpu_wheels/``) and then runs ``tools/analysis_tools/gpu_check.py``, the
command line over this module. Each step is a separate process, run from
the clone's root under its own ``timeout``, so one that fails, runs out of
memory or hangs is recorded and the others still run:

a. ``benchmark_vs_mae.py --device DEVICE --amp bf16`` at each batch of
   ``GPU_CHECK_BENCH_BATCHES``: step time, images/s, CUDA peak memory,
   FLOPs and MFU of MixedAE and MAE;
b. ``tools/train.py configs/mixedae_vitb_1600e.py`` on generated images in
   the ImageNet folder layout, shrunk only through ``--cfg-options``, at the
   first batch of ``GPU_CHECK_TRAIN_BATCHES`` that does not run out of
   memory; then ``--resume`` for a few more iterations.

Settings (environment variables; defaults for a GPU, smaller ones with
``GPU_CHECK_TINY=1``): ``OUT``, ``GPU_CHECK_DEVICE``, ``GPU_CHECK_TINY``,
``GPU_CHECK_BENCH_BATCHES``, ``GPU_CHECK_TRAIN_BATCHES``,
``GPU_CHECK_TRAIN_ITERS``, ``GPU_CHECK_RESUME_ITERS``,
``GPU_CHECK_BENCH_TIMEOUT``, ``GPU_CHECK_TRAIN_TIMEOUT``,
``GPU_CHECK_PEAK_TFLOPS``, ``GPU_CHECK_BUDGET``, ``GPU_CHECK_WORK``. See
docs/benchmark.md, "The GPU check".

Imports only the standard library (the command line loads it without
importing ``mixedae_mm``): the check has to run, and report, where torch or
the OpenMMLab packages do not import. The steps import them in their own
processes; the training data is made with ``mixedae_mm.datasets`` once the
benchmark has run.
"""
import glob
import json
import math
import os
import os.path as osp
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

#: the clone's root: the steps run its tools/ and configs/ from there
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RECIPE = 'configs/mixedae_vitb_1600e.py'
JSON_NAME = 'gpu_check.json'
GROUP_SIZE = 4  # images mixed together: batches are multiples of it

#: the settings, their GPU defaults and their GPU_CHECK_TINY=1 defaults
SETTINGS = {
    'GPU_CHECK_DEVICE': ('cuda', 'cuda'),
    'GPU_CHECK_BENCH_BATCHES': ('64 256 512', '8'),
    'GPU_CHECK_TRAIN_BATCHES': ('1024 512 256 128 64', '8'),
    'GPU_CHECK_TRAIN_ITERS': ('30', '4'),
    'GPU_CHECK_RESUME_ITERS': ('6', '2'),
    'GPU_CHECK_BENCH_TIMEOUT': ('150', '300'),
    'GPU_CHECK_TRAIN_TIMEOUT': ('240', '300'),
    'GPU_CHECK_PEAK_TFLOPS': ('', ''),
    # all steps together, seconds: the whole check stays under 10 minutes
    'GPU_CHECK_BUDGET': ('540', '900'),
}

#: --cfg-options / benchmark flags that shrink the model with GPU_CHECK_TINY
TINY_IMG, TINY_PATCH = 32, 8
TINY_TRAIN_OPTIONS = [
    'model.backbone.arch=demo-tiny',
    f'model.backbone.img_size={TINY_IMG}',
    f'model.backbone.patch_size={TINY_PATCH}',
    'model.neck.decoder_embed_dim=32',
    'model.neck.decoder_depth=1',
    'model.neck.decoder_num_heads=2',
    # the recipe's pipeline: LoadImageFromFile, RandomResizedCrop, ...
    f'train_dataloader.dataset.pipeline.1.scale={TINY_IMG}',
    'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False',
]
TINY_BENCH_FLAGS = ['--arch', 'demo-tiny', '--img-size', str(TINY_IMG),
                    '--patch-size', str(TINY_PATCH), '--decoder', '32', '1',
                    '2', '--steps', '2', '--warmup', '1']

OOM_MARKERS = ('CUDA out of memory', 'OutOfMemoryError')
MIN_STEP_S = 30  # a step left less than this by the budget is skipped
LOSS_KEYS = ('loss', 'loss_rec', 'loss_homo')


class SettingError(ValueError):
    """A GPU_CHECK_* variable with a value the check cannot use."""


def read_settings(environ) -> dict:
    tiny = environ.get('GPU_CHECK_TINY', '0')
    if tiny not in ('0', '1'):
        raise SettingError(f'GPU_CHECK_TINY={tiny!r}: use 0 or 1')
    tiny = tiny == '1'
    raw = {name: environ.get(name) or defaults[tiny]
           for name, defaults in SETTINGS.items()}
    device = raw['GPU_CHECK_DEVICE']
    if device != 'cpu' and not re.fullmatch(r'cuda(:\d+)?', device):
        raise SettingError(f'GPU_CHECK_DEVICE={device!r}: use cuda, cuda:N '
                           'or cpu')
    settings = dict(tiny=tiny, device=device)
    for key, name in (('bench_batches', 'GPU_CHECK_BENCH_BATCHES'),
                      ('train_batches', 'GPU_CHECK_TRAIN_BATCHES')):
        settings[key] = batch_list(name, raw[name])
    for key, name in (('train_iters', 'GPU_CHECK_TRAIN_ITERS'),
                      ('resume_iters', 'GPU_CHECK_RESUME_ITERS'),
                      ('bench_timeout_s', 'GPU_CHECK_BENCH_TIMEOUT'),
                      ('train_timeout_s', 'GPU_CHECK_TRAIN_TIMEOUT'),
                      ('budget_s', 'GPU_CHECK_BUDGET')):
        settings[key] = positive_int(name, raw[name])
    peak = raw['GPU_CHECK_PEAK_TFLOPS']
    settings['peak_tflops'] = None
    if peak:
        try:
            settings['peak_tflops'] = float(peak)
        except ValueError:
            pass
        if not settings['peak_tflops'] or settings['peak_tflops'] <= 0:
            raise SettingError(f'GPU_CHECK_PEAK_TFLOPS={peak!r}: give the '
                               "device's dense bf16 peak in TFLOP/s, e.g. "
                               '989')
    return settings


def positive_int(name, text) -> int:
    if not text.isdigit() or int(text) == 0:
        raise SettingError(f'{name}={text!r}: give a positive whole number')
    return int(text)


def batch_list(name, text) -> list:
    batches = [positive_int(name, item) for item in text.split()]
    if not batches:
        raise SettingError(f'{name} is empty: give batch sizes, e.g. "64 256"')
    for batch in batches:
        if batch % GROUP_SIZE:
            raise SettingError(
                f'{name}: {batch} is not a multiple of {GROUP_SIZE} (MixedAE '
                f'mixes groups of {GROUP_SIZE} images)')
    return batches


class Steps:
    """Runs the check's steps under one time budget and keeps the report
    on disk after each, so what was measured survives a run that is cut
    off."""

    def __init__(self, report, path, budget_s, start=None):
        self.report, self.path = report, path
        self.deadline = (start or time.monotonic()) + budget_s

    def save(self):
        with open(self.path, 'w') as f:
            json.dump(self.report, f, indent=1)

    def run(self, name, argv, timeout_s):
        """Run ``argv`` under ``timeout`` (the smaller of ``timeout_s`` and
        the budget left); stream its output to the console and the log.
        Returns the step's record and its output."""
        left = int(self.deadline - time.monotonic())
        if left < min(MIN_STEP_S, timeout_s):
            print(f'\n===== {name}: skipped, GPU_CHECK_BUDGET spent',
                  flush=True)
            return dict(status='skipped',
                        error='GPU_CHECK_BUDGET spent before this step'), ''
        timeout_s = min(timeout_s, left)
        print(f'\n===== {name}: {" ".join(argv)} (timeout {timeout_s} s)',
              flush=True)
        start = time.monotonic()
        # timeout signals its whole process group: data loader workers too
        proc = subprocess.Popen(
            ['timeout', '--kill-after=30', str(timeout_s)] + argv, cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            errors='replace')
        lines = []
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
        returncode = proc.wait()
        seconds = time.monotonic() - start
        output = ''.join(lines)
        record = dict(status=step_status(returncode, output,
                                         seconds >= timeout_s),
                      returncode=returncode, wall_s=round(seconds, 2))
        if record['status'] != 'ok':
            record['error'] = last_error_line(output)
        print(f"===== {name}: {record['status']} (exit {returncode}, "
              f'{seconds:.1f} s)', flush=True)
        return record, output


def step_status(returncode, output, ran_full_time) -> str:
    if returncode == 0:
        return 'ok'
    if any(marker in output for marker in OOM_MARKERS):
        return 'out_of_memory'
    # timeout's TERM, then its KILL; a KILL before the time limit came
    # from elsewhere (the kernel's out-of-memory killer, say)
    if returncode == 124 or (returncode == 137 and ran_full_time):
        return 'timeout'
    if returncode == 137:
        return 'killed'
    return 'failed'


def last_error_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r'^[\w.]*(Error|Exception)\b', line) or \
                line.startswith('train.py: error'):
            return line[:500]
    return lines[-1][:500] if lines else ''


# ---------------------------------------------------------------- a. benchmark
def benchmark(settings, work, steps) -> None:
    results = steps.report['benchmark'] = {}
    for batch in settings['bench_batches']:
        out = osp.join(work, f'benchmark_b{batch}.json')
        argv = [sys.executable, 'tools/analysis_tools/benchmark_vs_mae.py',
                '--device', settings['device'], '--amp', 'bf16',
                '--batch-size', str(batch), '--json', out]
        if settings['tiny']:
            argv += TINY_BENCH_FLAGS
        if settings['peak_tflops']:
            argv += ['--peak-tflops', str(settings['peak_tflops'])]
        record, _ = steps.run(f'benchmark batch {batch}', argv,
                              settings['bench_timeout_s'])
        if record['status'] == 'ok':
            with open(out) as f:
                record.update(summarise_benchmark(json.load(f)))
        results[str(batch)] = record
        steps.save()


#: per model, what the summary keeps of the benchmark's results (None where
#: the device cannot give it: CUDA memory on a CPU, MFU without a peak)
BENCH_FIELDS = ('step_median_s', 'images_per_s', 'cuda_peak_allocated_bytes',
                'saved_for_backward_bytes', 'flops_per_step', 'mfu')


def summarise_benchmark(report: dict) -> dict:
    summary = {name: {field: report['results'][name].get(field)
                      for field in BENCH_FIELDS}
               for name in ('MixedAE', 'MAE')}
    summary['ratio_mixedae_over_mae'] = report['ratio_mixedae_over_mae']
    summary['peak_tflops'] = report['config']['peak_tflops']
    summary['device_name'] = report['config']['device_name']
    summary['report'] = report
    return summary


# ---------------------------------------------------------------- b. training
def train_argv(settings, data, work_dir, batch, epochs, resume=False):
    argv = [sys.executable, 'tools/train.py', RECIPE, '--work-dir', work_dir]
    if resume:
        argv.append('--resume')
    argv += ['--cfg-options',
             f'train_dataloader.dataset.data_root={data}',
             f'train_dataloader.batch_size={batch}',
             f'train_cfg.max_epochs={epochs}',
             # one checkpoint, at the end (the recipe saves every epoch,
             # and an epoch here is a couple of iterations)
             f'default_hooks.checkpoint.interval={epochs}',
             'default_hooks.logger.interval=1']
    if settings['tiny']:
        argv += TINY_TRAIN_OPTIONS
    return argv


def read_scalars(work_dir) -> list:
    """Per-iteration records of the newest run in ``work_dir`` (mmengine's
    LocalVisBackend: ``<timestamp>/vis_data/scalars.json``)."""
    runs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                     'scalars.json')))
    if not runs:
        return []
    with open(runs[-1]) as f:
        return [json.loads(line) for line in f if line.strip()]


def summarise_training(records, batch, skip=3) -> dict:
    """Speed from mmengine's per-iteration ``time`` (the first ``skip``
    iterations, warm-up, left out when there are enough), peak memory from
    its ``memory`` (``max_memory_allocated``, whole MiB, CUDA only), and the
    losses: all of them, and the means of the first and last few."""
    steps = [r for r in records if 'loss' in r and 'time' in r]
    timed = steps[skip:] if len(steps) > 2 * skip else steps
    summary = dict(iterations=len(steps),
                   last_iter=steps[-1]['iter'] if steps else None,
                   losses=[r['loss'] for r in steps])
    if not steps:
        return summary
    iter_s = statistics.median(r['time'] for r in timed)
    memory = [r['memory'] for r in steps if 'memory' in r]
    summary.update(
        iter_time_median_s=iter_s,
        data_time_median_s=statistics.median(r['data_time'] for r in timed),
        iterations_per_s=1 / iter_s,
        images_per_s=batch / iter_s,
        peak_memory_bytes=max(memory) * 2**20 if memory else None)
    window = max(1, min(5, len(steps) // 2))
    for key in LOSS_KEYS:
        values = [r[key] for r in steps if key in r]
        if values:
            summary[f'{key}_first_mean'] = statistics.mean(values[:window])
            summary[f'{key}_last_mean'] = statistics.mean(values[-window:])
    summary['loss_fell'] = (summary['loss_last_mean'] <
                            summary['loss_first_mean'])
    return summary


def train_and_resume(settings, work, steps) -> None:
    report = steps.report
    data = osp.join(work, 'imagenet')
    batches = settings['train_batches']
    # two batches of the largest candidate; a smaller batch runs more
    # iterations per epoch over the same images
    images = 2 * max(batches)
    size = 40 if settings['tiny'] else 256
    start = time.monotonic()
    # smooth images (learnable by an autoencoder), 4 classes; the batches
    # are multiples of GROUP_SIZE, so images is too
    from mixedae_mm.datasets import make_imagenet_folder
    make_imagenet_folder(data, classes=4, per_class=images // 4, size=size,
                         style='smooth')
    print(f'generated {images} images of {size}px in {data}', flush=True)
    train = report['train'] = dict(
        status='failed', batch_size=None, tries=[],
        data=dict(images=images, size=size,
                  seconds=round(time.monotonic() - start, 2)))
    report['resume'] = dict(status='skipped', error='training failed')
    for batch in batches:
        per_epoch = images // batch
        epochs = math.ceil(settings['train_iters'] / per_epoch)
        work_dir = osp.join(work, f'train_b{batch}')
        record, _ = steps.run(
            f'train batch {batch}',
            train_argv(settings, data, work_dir, batch, epochs),
            settings['train_timeout_s'])
        train['tries'].append(dict(batch_size=batch, **record))
        train['status'] = record['status']
        if record['status'] == 'ok':
            train.update(batch_size=batch, epochs=epochs,
                         iterations_per_epoch=per_epoch,
                         **summarise_training(read_scalars(work_dir), batch))
        steps.save()
        if record['status'] != 'out_of_memory':
            break  # a smaller batch mends neither an error nor a hang
    if train['status'] != 'ok':
        return

    batch = train['batch_size']
    more_epochs = math.ceil(settings['resume_iters'] /
                            train['iterations_per_epoch'])
    record, output = steps.run(
        f'resume batch {batch}',
        train_argv(settings, data, work_dir, batch, epochs + more_epochs,
                   resume=True), settings['train_timeout_s'])
    resume = report['resume'] = dict(record, batch_size=batch,
                                     epochs=epochs + more_epochs)
    found = re.search(r'resumed epoch: (\d+), iter: (\d+)', output)
    resume['resumed_from_iter'] = int(found.group(2)) if found else None
    resume['resumed_where_training_stopped'] = (
        resume['resumed_from_iter'] == train['last_iter'])
    if record['status'] == 'ok':
        resume.update(summarise_training(read_scalars(work_dir), batch,
                                         skip=0))
    steps.save()


# ---------------------------------------------------------------- environment
ENV_PROBE = r'''
import json, platform, sys
info = dict(python=sys.version.split()[0], executable=sys.executable)
import torch
info.update(torch=torch.__version__, cuda=torch.version.cuda,
            cuda_available=torch.cuda.is_available())
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    info.update(device_name=props.name, device_memory_bytes=props.total_memory)
packages = {}
for name in ('mmengine', 'mmcv', 'mmpretrain', 'mmseg', 'mmdet'):
    try:
        module = __import__(name)
        packages[name] = dict(version=module.__version__,
                              path=module.__file__)
    except Exception as error:
        packages[name] = dict(error=f'{type(error).__name__}: {error}')
try:
    import mmcv.ops  # noqa: F401
    packages['mmcv']['ops'] = True
except Exception:
    packages['mmcv']['ops'] = False
info['packages'] = packages
print('ENV_PROBE ' + json.dumps(info))
'''


def probe_environment() -> dict:
    result = subprocess.run([sys.executable, '-c', ENV_PROBE], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    for line in result.stdout.splitlines():
        if line.startswith('ENV_PROBE '):
            return json.loads(line[len('ENV_PROBE '):])
    return dict(error=last_error_line(result.stdout + result.stderr))


def run(settings: dict, environ=os.environ) -> int:
    """The whole check with ``settings`` (:func:`read_settings`); ``OUT``,
    ``GPU_CHECK_WORK`` and what ``tools/gpu_check.sh`` exports come from
    ``environ``. Streams every step's output, writes ``OUT/gpu_check.json``
    after each step, prints the summary; returns the exit status: 0 when
    every step passed, 1 when one did not, 2 when the device is missing.
    Needs GNU ``timeout`` on ``PATH``."""
    start = time.monotonic()
    out = environ.get('OUT') or osp.join(ROOT, 'work_dirs', 'gpu_check')
    os.makedirs(out, exist_ok=True)
    # scratch (images, checkpoints of a GB and more) stays out of $OUT,
    # which only the JSON and the log should reach
    work = environ.get('GPU_CHECK_WORK') or tempfile.mkdtemp(
        prefix='mixedae_gpu_check_')
    os.makedirs(work, exist_ok=True)
    report = dict(
        status='running',
        config=dict(settings, out=out, work=work, recipe=RECIPE,
                    host=platform.node()),
        install=dict(status=environ.get('GPU_CHECK_INSTALL_STATUS',
                                        'not run through gpu_check.sh'),
                     site=environ.get('GPU_CHECK_SITE_USED')),
        environment=probe_environment())
    print('environment: ' + json.dumps(report['environment'], indent=1),
          flush=True)
    path = osp.join(out, JSON_NAME)
    steps = Steps(report, path, settings['budget_s'], start)
    try:
        if settings['device'].startswith('cuda') and \
                not report['environment'].get('cuda_available'):
            report['status'] = 'error'
            report['error'] = (
                f"GPU_CHECK_DEVICE={settings['device']} but torch sees no "
                'CUDA GPU here; to run the check on the CPU set '
                'GPU_CHECK_DEVICE=cpu GPU_CHECK_TINY=1')
            print(f"gpu_check: error: {report['error']}", file=sys.stderr)
            return 2
        benchmark(settings, work, steps)
        train_and_resume(settings, work, steps)
        report['status'] = overall_status(report)
    finally:
        if report['status'] == 'running':  # an exception in this script
            report['status'] = 'error'
        report['wall_s'] = round(time.monotonic() - start, 1)
        steps.save()
        if not environ.get('GPU_CHECK_WORK'):
            shutil.rmtree(work, ignore_errors=True)
        print(f"\ngpu_check: {report['status']}; written: {path}")
    print_summary(report)
    return 0 if report['status'] == 'ok' else 1


def overall_status(report) -> str:
    steps = list(report['benchmark'].values())
    steps += [report['train'], report['resume']]
    return 'ok' if all(step['status'] == 'ok' for step in steps) \
        else 'incomplete'


def print_summary(report):
    for batch, bench in report['benchmark'].items():
        if bench['status'] != 'ok':
            print(f"benchmark batch {batch}: {bench['status']}: "
                  f"{bench.get('error', '')}")
            continue
        for name in ('MixedAE', 'MAE'):
            res = bench[name]
            line = (f"benchmark batch {batch} {name:<8}: "
                    f"{1000 * res['step_median_s']:.1f} ms/step, "
                    f"{res['images_per_s']:.1f} img/s")
            peak = res['cuda_peak_allocated_bytes']
            if peak:
                line += f', peak {peak / 2**30:.2f} GiB'
            if res['mfu'] is not None:
                line += f", MFU {100 * res['mfu']:.1f}%"
            print(line)
    for key in ('train', 'resume'):
        step = report[key]
        if step.get('iterations'):
            memory = step.get('peak_memory_bytes')
            print(f"{key}: batch {step.get('batch_size', '')} "
                  f"{step['iterations']} iterations, "
                  f"{step['iterations_per_s']:.2f} it/s, "
                  f"{step['images_per_s']:.1f} img/s, loss "
                  f"{step['loss_first_mean']:.4f} -> "
                  f"{step['loss_last_mean']:.4f}" +
                  (f', peak {memory / 2**30:.2f} GiB' if memory else ''))
        else:
            print(f"{key}: {step.get('status')} {step.get('error', '')}")

