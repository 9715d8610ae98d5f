"""tools/analysis_tools/benchmark_vs_mae.py end to end, on a tiny size."""
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from mixedae_mm.analysis.benchmark import SPLIT_PARTS
from mixedae_mm.ops.fast import cpu_kernels

TOOLS = Path(__file__).resolve().parents[1] / 'tools' / 'analysis_tools'


@pytest.fixture(scope='module')
def bench_tool():
    from conftest import load_tool
    return load_tool('analysis_tools/benchmark_vs_mae.py')


@pytest.mark.parametrize('extra', [[], ['--with-cp', '--amp', 'bf16']])
def test_benchmark_writes_the_documented_json(bench_tool, tmp_path, extra):
    out = tmp_path / 'bench.json'
    bench_tool.main([
        '--arch', 'demo-tiny', '--img-size', '32', '--patch-size', '8',
        '--decoder', '32', '1', '2', '--batch-size', '8', '--steps', '2',
        '--warmup', '1', '--device', 'cpu', '--json', str(out),
        '--malloc', 'default'  # pinning would outlive the test (see below)
    ] + extra)
    report = json.loads(out.read_text())
    assert report['config']['batch_size'] == 8
    assert {'torch', 'device', 'device_name', 'threads', 'amp',
            'with_cp', 'compile', 'malloc_pinned'} <= set(report['config'])
    assert report['config']['malloc_pinned'] is False
    assert report['config']['cpu_attention_kernel'] is \
        cpu_kernels.available()
    for name in ('MixedAE', 'MAE'):
        result = report['results'][name]
        assert len(result['step_s']) == 2
        assert len(result['step_page_faults']) == 2
        assert all(faults >= 0 for faults in result['step_page_faults'])
        assert result['step_min_s'] <= result['step_median_s'] <= \
            result['step_max_s']
        assert result['images_per_s'] > 0
        assert result['saved_for_backward_bytes'] > 0
        assert result['flops_per_step'] > 0
        assert set(result['split_s']) == set(SPLIT_PARTS)
        assert result['split_s']['encoder_attention'] > 0
    assert result.get('mfu') is None  # no device peak on the CPU
    ratios = report['ratio_mixedae_over_mae']
    assert set(ratios) == {'step_median_s', 'step_min_s',
                           'step_paired_median', 'saved_for_backward_bytes',
                           'flops_per_step'}
    assert report['results']['MixedAE']['split_s']['losses'] > 0


def test_benchmark_profiles_ops_of_both_models(bench_tool, capsys):
    report = bench_tool.main([
        '--arch', 'demo-tiny', '--img-size', '32', '--patch-size', '8',
        '--decoder', '32', '1', '2', '--batch-size', '4', '--steps', '1',
        '--warmup', '1', '--no-split', '--no-flops', '--profile-ops', '2',
        '--malloc', 'default'
    ])
    profiles = {name: result['op_profile_ms']['cpu']
                for name, result in report['results'].items()}
    # MAE runs torch's fused attention; MixedAE's encoder runs its own
    # (the C kernel, or the PyTorch ops, both through batched matmuls)
    assert 'aten::bmm' in profiles['MixedAE']
    assert 'aten::bmm' not in profiles['MAE']
    assert all(ms > 0 for profile in profiles.values()
               for ms in profile.values())
    ratio = report['ratio_mixedae_over_mae']['op_profile_cpu_total']
    assert ratio == pytest.approx(
        sum(profiles['MixedAE'].values()) / sum(profiles['MAE'].values()))
    printed = capsys.readouterr().out
    assert 'largest differences:' in printed
    assert 'self CPU time of all ops (profiled)' in printed


def test_benchmark_mfu_uses_the_peak_override(bench_tool, tmp_path):
    out = tmp_path / 'bench.json'
    report = bench_tool.main([
        '--arch', 'demo-tiny', '--img-size', '32', '--patch-size', '8',
        '--decoder', '32', '1', '2', '--batch-size', '4', '--steps', '1',
        '--warmup', '0', '--no-split', '--peak-tflops', '1',
        '--json', str(out), '--malloc', 'default'
    ])
    for result in report['results'].values():
        expected = result['flops_per_step'] / result['step_median_s'] / 1e12
        assert result['mfu'] == pytest.approx(expected)


@pytest.mark.slow
@pytest.mark.skipif(platform.system() != 'Linux'
                    or platform.libc_ver()[0] != 'glibc',
                    reason='pins glibc malloc')
def test_benchmark_pins_glibc_malloc_by_default_on_the_cpu(tmp_path):
    """In its own process, as the pinned thresholds last for the process's
    life. (What pinning changes shows at ViT-B size, not on this tiny model:
    docs/benchmark.md.)"""
    out = tmp_path / 'bench.json'
    subprocess.run([
        sys.executable, str(TOOLS / 'benchmark_vs_mae.py'), '--arch',
        'demo-tiny', '--img-size', '32', '--patch-size', '8', '--decoder',
        '32', '1', '2', '--batch-size', '8', '--steps', '3', '--warmup', '2',
        '--device', 'cpu', '--no-split', '--no-flops', '--json', str(out)
    ], check=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    report = json.loads(out.read_text())
    assert report['config']['malloc_pinned'] is True
    for result in report['results'].values():
        assert len(result['step_page_faults']) == 3
