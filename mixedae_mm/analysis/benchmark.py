"""Cost of MixedAE against mmpretrain's MAE: time, memory and FLOPs of full
training steps.

Both models have the same encoder and decoder sizes; per step MixedAE runs
``B/G`` encoder sequences of ``N + 1`` tokens (MAE: ``B`` of ``N/4 + 1``) and
``B`` decoder sequences of ``N + 1`` (both), plus the top-k selection and the
contrastive loss. A step is forward, backward and an AdamW update.

Measured, after ``--warmup`` steps of each model:

- time: ``--steps`` interleaved steps (MixedAE, MAE, MixedAE, ...), so both
  see the same machine state; median, min/max, images/s, and the median
  over pairs of the ratio of a MixedAE step to the MAE step after it;
- memory: the bytes autograd keeps for backward (unique non-parameter
  storages seen by ``saved_tensors_hooks``, every device; measured eagerly,
  also with ``--compile``), and on CUDA the peak allocated memory of a step;
- FLOPs of a step (``torch.utils.flop_counter``; CPU attention counted by
  ``mixedae_mm.analysis.flop_counting``) and, on a GPU, MFU against the
  device's peak;
- a cost split of MixedAE's step (and MAE's) from module hooks, in a
  separate, untimed step;
- the minor page faults of every timed step (Unix).

On a CPU with glibc the allocator's mmap and trim thresholds are pinned
first (``--malloc pinned``, the default there): see :func:`pin_glibc_malloc`.

:func:`compare_with_mae` measures and returns the report,
:func:`print_report` prints it; ``tools/analysis_tools/benchmark_vs_mae.py``
is the command line over them. See docs/benchmark.md for the fields of the
report and measured numbers.
"""
import argparse
import contextlib
import ctypes
import ctypes.util
import platform
import statistics
import time
import warnings
from collections import defaultdict

try:
    import resource
except ImportError:  # not on Windows
    resource = None

import torch

from .. import ops
from ..ops.fast import cpu_kernels
from .step_cost import Trainer, build_pair

__all__ = ['compare_with_mae', 'print_report', 'pin_glibc_malloc',
           'cost_split', 'op_profiles', 'device_peak_tflops', 'PEAK_TFLOPS',
           'SPLIT_PARTS', 'RATIO_LABELS']

#: dense peak TFLOP/s by device name substring, per compute dtype (tensor
#: cores for bf16/fp16, TF32 off for fp32); ``--peak-tflops`` overrides
PEAK_TFLOPS = {
    'H200': dict(bf16=989., fp16=989., fp32=67.),
    'H100': dict(bf16=989., fp16=989., fp32=67.),  # SXM; PCIe: 756/51
    'A100': dict(bf16=312., fp16=312., fp32=19.5),
    'L40S': dict(bf16=362., fp16=362., fp32=91.6),
    'A10': dict(bf16=125., fp16=125., fp32=31.2),
    'V100': dict(fp16=125., fp32=15.7),
    '4090': dict(bf16=165., fp16=165., fp32=82.6),
}
SPLIT_PARTS = ('patch_embed+mixing', 'encoder_attention', 'encoder_mlp',
               'losses', 'decoder', 'optimizer', 'other')


def pin_glibc_malloc() -> bool:
    """Stop glibc's malloc from adapting its mmap and trim thresholds.

    By default glibc raises both thresholds to the largest block freed so
    far, and returns the top of the heap to the OS whenever enough of it is
    free. Which of two models stepping in turn then grows the heap again
    (and page-faults its memory back in) depends on the allocation history,
    not on the model: in one interleaved ViT-B run each MixedAE step took
    13,000-20,000 minor page faults and each MAE step none; with the order
    swapped both took them, unevenly. Pinned -- blocks up to 32 MiB (glibc's
    maximum) from the heap, no trimming -- neither step faults after warm-up
    (``step_page_faults`` in the results shows it). PyTorch's CPU tuning
    guide recommends jemalloc or tcmalloc for the same reason.

    Returns whether it was applied (glibc found and both settings taken).
    """
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return False
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)
                and libc.mallopt(m_trim_threshold, 2**31 - 1))


def minor_page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt \
        if resource else 0


@contextlib.contextmanager
def timed_parts(model, split):
    """Add forward+backward seconds of the model's parts to ``split``.

    Forward time comes from forward pre/post hooks, backward time from
    full backward pre/post hooks of the same modules; the contrastive loss
    and the mixing are timed by wrapping their ``ops`` functions (the loss's
    backward from hooks on its output and input). Timing is host-side, so
    on CUDA every hook synchronises: use for the split, not for step time.
    """
    sync = torch.cuda.synchronize if next(
        model.parameters()).is_cuda else (lambda: None)
    backbone = model.backbone
    parts = [(backbone.patch_embed, 'patch_embed+mixing'), (model.neck,
                                                           'decoder')]
    for layer in backbone.layers:
        parts += [(layer.attn, 'encoder_attention'), (layer.ffn,
                                                      'encoder_mlp')]
    handles, starts = [], {}

    def begin(key):
        sync()
        starts[key] = time.perf_counter()

    def end(key, part):
        sync()
        split[part] += time.perf_counter() - starts.pop(key)

    for module, part in parts:
        fwd, bwd = ('f', id(module)), ('b', id(module))
        handles += [
            module.register_forward_pre_hook(
                lambda m, a, key=fwd: begin(key)),
            module.register_forward_hook(
                lambda m, a, o, key=fwd, part=part: end(key, part)),
            module.register_full_backward_pre_hook(
                lambda m, g, key=bwd: begin(key)),
            module.register_full_backward_hook(
                lambda m, gi, go, key=bwd, part=part: end(key, part)),
        ]
    contrastive, mix_images = ops.homologous_contrastive_loss, ops.mix_images

    def timed_contrastive(features, *args, **kwargs):
        begin('cf')
        loss = contrastive(features, *args, **kwargs)
        end('cf', 'losses')
        if loss.requires_grad:
            loss.register_hook(lambda g: begin('cb'))
            features.register_hook(lambda g: end('cb', 'losses'))
        return loss

    def timed_mix(*args, **kwargs):
        begin('mix')
        out = mix_images(*args, **kwargs)
        end('mix', 'patch_embed+mixing')
        return out

    ops.homologous_contrastive_loss, ops.mix_images = (timed_contrastive,
                                                      timed_mix)
    try:
        yield
    finally:
        ops.homologous_contrastive_loss, ops.mix_images = (contrastive,
                                                          mix_images)
        for handle in handles:
            handle.remove()


def cost_split(trainer, images) -> dict:
    """Seconds of each part of one step (see ``SPLIT_PARTS``)."""
    split = defaultdict(float)
    model = trainer.model
    with timed_parts(model, split), warnings.catch_warnings():
        # the patch embedding's input needs no gradient: its backward hook
        # fires before its weight gradient, which then counts as 'other'
        warnings.filterwarnings('ignore', 'Full backward hook is firing')
        trainer.sync()
        start = time.perf_counter()
        trainer.step(images, split)
        total = time.perf_counter() - start
    split['other'] = total - sum(split.values())
    return {part: split[part] for part in SPLIT_PARTS}


def op_profiles(trainers: dict, images, steps: int) -> dict:
    """Self time of each op, ms per step, over ``steps`` profiled steps of
    each model, interleaved as the timed steps are: ``{model: {'cpu': {op:
    ms}}}``, plus ``'device'`` on CUDA."""
    profiles = {name: defaultdict(lambda: defaultdict(float))
                for name in trainers}
    for _ in range(steps):
        for name, trainer in trainers.items():
            activities = [torch.profiler.ProfilerActivity.CPU]
            if trainer.device.type == 'cuda':
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            with torch.profiler.profile(activities=activities) as prof:
                trainer.step(images)
            for event in prof.key_averages():
                # microseconds -> milliseconds per step
                profiles[name]['cpu'][event.key] += \
                    event.self_cpu_time_total * 1e-3 / steps
                if trainer.device.type == 'cuda':
                    profiles[name]['device'][event.key] += \
                        event.self_device_time_total * 1e-3 / steps
    return {name: {kind: {op: ms for op, ms in per_op.items() if ms > 0}
                   for kind, per_op in profile.items()}
            for name, profile in profiles.items()}


def device_peak_tflops(device, amp, override):
    if override:
        return override
    if device.type != 'cuda':
        return None
    name = torch.cuda.get_device_name(device)
    dtype = 'fp32' if amp == 'none' else amp
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            return peaks.get(dtype)
    return None


def compare_with_mae(arch='b', img_size=224, patch_size=16,
                     decoder=(512, 8, 16), batch_size=8, steps=9, warmup=2,
                     device=None, amp='none', compile=False, with_cp=False,
                     no_split=False, no_flops=False, peak_tflops=None,
                     threads=None, malloc='pinned', profile_ops=0,
                     **recorded) -> dict:
    """Measure MixedAE against MAE at one size (the options of
    ``tools/analysis_tools/benchmark_vs_mae.py``, by their names there;
    ``device`` None: CUDA where there is a GPU) and return the report:
    ``config`` (the options, ``recorded`` ones too, and the machine),
    ``results`` per model and ``ratio_mixedae_over_mae``. See
    docs/benchmark.md for the fields."""
    options = dict(locals())  # the parameters, in their order
    recorded = options.pop('recorded')
    args = argparse.Namespace(**options, **recorded)
    if args.device is None:
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    malloc_pinned = (args.malloc == 'pinned' and device.type == 'cpu'
                     and pin_glibc_malloc())
    trainers = {
        name: Trainer(model, device, args.amp, args.compile)
        for name, model in zip(('MixedAE', 'MAE'),
                               build_pair(args.arch, args.img_size,
                                          args.patch_size, *args.decoder,
                                          with_cp=args.with_cp))
    }
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size,
                         device=device)
    results = {name: {} for name in trainers}

    for name, trainer in trainers.items():
        results[name]['saved_for_backward_bytes'] = trainer.saved_bytes(
            images)
        if args.compile:
            trainer.loss_fn = torch.compile(trainer.model.loss)
        for _ in range(args.warmup):
            trainer.step(images)
        if device.type == 'cuda':
            results[name]['cuda_peak_allocated_bytes'] = \
                trainer.peak_cuda_bytes(images)
        if not args.no_flops and not args.compile:
            results[name]['flops_per_step'] = trainer.flops(images)

    times = {name: [] for name in trainers}
    faults = {name: [] for name in trainers}
    for _ in range(args.steps):  # interleaved: the same machine state
        for name, trainer in trainers.items():
            trainer.sync()
            faults_before = minor_page_faults()
            start = time.perf_counter()
            trainer.step(images)
            times[name].append(time.perf_counter() - start)
            faults[name].append(minor_page_faults() - faults_before)

    peak = device_peak_tflops(device, args.amp, args.peak_tflops)
    for name, trainer in trainers.items():
        result = results[name]
        if times[name]:
            median = statistics.median(times[name])
            result.update(
                step_s=times[name],
                step_median_s=median,
                step_min_s=min(times[name]),
                step_max_s=max(times[name]),
                images_per_s=args.batch_size / median,
                step_page_faults=faults[name])
            if peak and 'flops_per_step' in result:
                result['mfu'] = result['flops_per_step'] / median / (
                    peak * 1e12)
        if not args.no_split and not args.compile:
            result['split_s'] = cost_split(trainer, images)

    if args.profile_ops:
        for name, profile in op_profiles(trainers, images,
                                         args.profile_ops).items():
            results[name]['op_profile_ms'] = profile

    ratios = {}
    for key in ('step_median_s', 'step_min_s', 'saved_for_backward_bytes',
                'cuda_peak_allocated_bytes', 'flops_per_step'):
        if key in results['MAE']:
            ratios[key] = results['MixedAE'][key] / results['MAE'][key]
    if args.profile_ops:
        for kind in results['MAE']['op_profile_ms']:
            ratios[f'op_profile_{kind}_total'] = (
                sum(results['MixedAE']['op_profile_ms'][kind].values()) /
                sum(results['MAE']['op_profile_ms'][kind].values()))
    if times['MAE']:
        # each MixedAE step against the MAE step right after it: robust to
        # slow phases of a shared machine, which hit both steps of a pair
        ratios['step_paired_median'] = statistics.median(
            a / b for a, b in zip(times['MixedAE'], times['MAE']))
    report = dict(
        config=dict(
            vars(args), device=str(device),
            device_name=(torch.cuda.get_device_name(device)
                         if device.type == 'cuda' else platform.processor()
                         or platform.machine()),
            threads=torch.get_num_threads(), torch=torch.__version__,
            peak_tflops=peak, malloc_pinned=malloc_pinned,
            # whether homologous attention ran its C kernel (CPU) or the
            # PyTorch ops; None off the CPU
            cpu_attention_kernel=(cpu_kernels.available()
                                  if device.type == 'cpu' else None)),
        results=results,
        ratio_mixedae_over_mae=ratios)
    return report


def print_report(report):
    cfg, results = report['config'], report['results']
    print(f"arch={cfg['arch']} img={cfg['img_size']} batch={cfg['batch_size']}"
          f" device={cfg['device']} ({cfg['device_name']}, "
          f"{cfg['threads']} threads) amp={cfg['amp']} "
          f"compile={cfg['compile']} with_cp={cfg['with_cp']} "
          f"torch={cfg['torch']} malloc_pinned={cfg['malloc_pinned']} "
          f"cpu_attention_kernel={cfg['cpu_attention_kernel']}")
    for name, res in results.items():
        line = [f'{name:<8}']
        if 'step_median_s' in res:
            line.append(f"step {1000 * res['step_median_s']:.0f} ms "
                        f"[{1000 * res['step_min_s']:.0f}, "
                        f"{1000 * res['step_max_s']:.0f}] "
                        f"{res['images_per_s']:.1f} img/s, "
                        f"{statistics.median(res['step_page_faults']):.0f} "
                        'page faults')
        line.append(f"kept for backward "
                    f"{res['saved_for_backward_bytes'] / 2**20:.0f} MiB")
        if 'cuda_peak_allocated_bytes' in res:
            line.append(f"peak {res['cuda_peak_allocated_bytes'] / 2**20:.0f}"
                        ' MiB')
        if 'flops_per_step' in res:
            line.append(f"{res['flops_per_step'] / 1e9:.1f} GFLOP")
        if 'mfu' in res:
            line.append(f"MFU {100 * res['mfu']:.1f}%")
        print('  '.join(line))
        if 'split_s' in res:
            print('         split (ms): ' + ', '.join(
                f'{k} {1000 * v:.0f}' for k, v in res['split_s'].items()))
    if 'op_profile_ms' in results['MAE']:
        print_op_differences(results)
    print('MixedAE / MAE:')
    ratios = report['ratio_mixedae_over_mae']
    for key, label in RATIO_LABELS.items():
        if key in ratios:
            print(f'  {label:<44} x{ratios[key]:.3f}')


def print_op_differences(results, rows: int = 12):
    """The ops whose self time differs most between the models."""
    for kind in results['MAE']['op_profile_ms']:
        ours = results['MixedAE']['op_profile_ms'][kind]
        theirs = results['MAE']['op_profile_ms'][kind]
        print(f'self {kind} time per step (ms), profiled: MixedAE '
              f'{sum(ours.values()):.0f}, MAE {sum(theirs.values()):.0f}; '
              'largest differences:')
        for op in sorted(set(ours) | set(theirs),
                         key=lambda op: -abs(
                             ours.get(op, 0) - theirs.get(op, 0)))[:rows]:
            a, b = ours.get(op, 0.), theirs.get(op, 0.)
            print(f'  {op[:52]:<52} {a:9.1f} {b:9.1f} {a - b:+8.1f}')


#: printed names of ``ratio_mixedae_over_mae``'s keys, steadiest time first
RATIO_LABELS = {
    'step_paired_median': 'step time, median of interleaved pairs',
    'step_median_s': 'step time, median',
    'step_min_s': 'step time, fastest step',
    'saved_for_backward_bytes': 'memory kept for backward',
    'cuda_peak_allocated_bytes': 'CUDA peak allocated',
    'flops_per_step': 'FLOPs per step',
    'op_profile_cpu_total': 'self CPU time of all ops (profiled)',
    'op_profile_device_total': 'self device time of all ops (profiled)',
}

