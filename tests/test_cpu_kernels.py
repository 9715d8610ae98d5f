"""Building, loading and falling back from the C kernels of homologous
attention (their numerics are tested against the reference in
test_ops.py)."""
import os
import subprocess
import sys

import pytest
import torch

from mixedae_mm.ops.fast import cpu_kernels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# a fresh interpreter runs topk_attention at ViT-B size and compares it with
# the reference; it prints whether the kernel was used
PROBE = '''
import warnings
warnings.simplefilter('always')
import torch
from mixedae_mm import ops
from mixedae_mm.ops.fast import cpu_kernels
torch.manual_seed(0)
q, k, v = (torch.randn(2, 3, 197, 64) for _ in range(3))
fast = ops.topk_attention(q, k, v, 49).out
ref = ops.topk_attention_reference(q, k, v, 49).out
torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
print('kernel:', cpu_kernels.available())
'''


def _probe(tmp_path, **env):
    full_env = dict(os.environ, PYTHONPATH=REPO,
                    MIXEDAE_KERNEL_CACHE=str(tmp_path / 'cache'))
    full_env.update(env)
    return subprocess.run([sys.executable, '-c', PROBE], env=full_env,
                          capture_output=True, text=True, cwd=REPO)


@pytest.mark.slow
def test_without_a_compiler_the_cpu_falls_back_with_a_warning(tmp_path):
    result = _probe(tmp_path, CC='no-such-cc')
    assert result.returncode == 0, result.stderr
    assert 'kernel: False' in result.stdout
    assert "no C compiler 'no-such-cc'" in result.stderr
    assert 'Install a C compiler' in result.stderr
    # switched off on purpose: no warning
    result = _probe(tmp_path, MIXEDAE_CPU_KERNELS='0')
    assert result.returncode == 0, result.stderr
    assert 'kernel: False' in result.stdout
    assert 'could not be built' not in result.stderr


@pytest.mark.slow
def test_an_unwritable_cache_falls_back_with_a_warning(tmp_path):
    """docs/troubleshooting.md: a cache folder that cannot be created (here
    under a regular file, which even root cannot write into) is reported,
    and MIXEDAE_KERNEL_CACHE is the way to move it."""
    blocker = tmp_path / 'not_a_folder'
    blocker.write_text('')
    result = _probe(tmp_path, MIXEDAE_KERNEL_CACHE=str(blocker / 'cache'))
    assert result.returncode == 0, result.stderr
    assert 'kernel: False' in result.stdout
    assert 'could not be built' in result.stderr
    assert 'not_a_folder' in result.stderr


@pytest.mark.slow
def test_a_compiler_error_is_reported_and_falls_back(tmp_path):
    fake_cc = tmp_path / 'cc'
    fake_cc.write_text('#!/bin/sh\n'
                       'case "$1" in --version) echo fake 1.0;; '
                       '*) echo "fake: cannot compile" >&2; exit 1;; esac\n')
    fake_cc.chmod(0o755)
    result = _probe(tmp_path, CC=str(fake_cc))
    assert result.returncode == 0, result.stderr
    assert 'kernel: False' in result.stdout
    assert 'fake: cannot compile' in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not cpu_kernels.available(),
                    reason='no C compiler with OpenMP here')
def test_the_build_is_cached_per_source_and_cpu(tmp_path):
    result = _probe(tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'kernel: True' in result.stdout
    built = list((tmp_path / 'cache').glob('topk_softmax-*.so'))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    # a second process loads the cached library instead of rebuilding
    assert 'kernel: True' in _probe(tmp_path).stdout
    assert built[0].stat().st_mtime_ns == stamp
    assert list((tmp_path / 'cache').glob('topk_softmax-*.so')) == built
    # a damaged cached build (a copy cut short) is built again, once
    built[0].write_bytes(b'not a shared library')
    assert 'kernel: True' in _probe(tmp_path).stdout
    assert built[0].read_bytes()[:4] == b'\x7fELF'


@pytest.mark.skipif(not cpu_kernels.available(),
                    reason='no C compiler with OpenMP here')
def test_the_kernel_rejects_inputs_it_cannot_read():
    scores = torch.randn(2, 17, 17)
    with pytest.raises(ValueError, match='contiguous torch.float32 CPU'):
        cpu_kernels.topk_softmax_forward(scores.transpose(-2, -1), 1, 4, 0.5)
    with pytest.raises(ValueError, match='contiguous torch.float32 CPU'):
        cpu_kernels.topk_softmax_forward(scores.double(), 1, 4, 0.5)
    with pytest.raises(ValueError, match='top-k'):
        cpu_kernels.topk_softmax_forward(scores, 1, 17, 0.5)


@pytest.mark.skipif(not cpu_kernels.available(),
                    reason='no C compiler with OpenMP here')
def test_the_kernel_rejects_shapes_that_do_not_fit():
    """The ops are public (torch.ops.mixedae_mm.*): a shape the kernel would
    read or write out of bounds is a clear error instead."""
    with pytest.raises(ValueError, match='square'):
        cpu_kernels.topk_softmax_forward(torch.randn(1, 4000, 4), 1, 2, 0.5)
    with pytest.raises(ValueError, match='square'):
        cpu_kernels.topk_softmax_forward(torch.randn(1, 2, 4), 1, 1, 0.5)
    with pytest.raises(ValueError, match='num_prefix_tokens'):
        cpu_kernels.topk_softmax_forward(torch.randn(1, 5, 5), -1, 2, 0.5)
    with pytest.raises(ValueError, match='scale'):
        cpu_kernels.topk_softmax_forward(torch.randn(1, 5, 5), 1, 2, 0.0)
    scores = torch.randn(2, 9, 9)
    kept, index = cpu_kernels.topk_softmax_forward(scores, 1, 3, 0.5)
    prefix = scores[:, :1].clone()
    grad = torch.randn(2, 9, 9)
    cpu_kernels.topk_softmax_backward(grad.clone(), prefix, kept, index)
    with pytest.raises(ValueError, match='kept must have shape'):
        cpu_kernels.topk_softmax_backward(grad.clone(), prefix, kept[:1],
                                          index)
    with pytest.raises(ValueError, match='prefix_probs must have shape'):
        cpu_kernels.topk_softmax_backward(grad.clone(),
                                          prefix[..., :4].clone(), kept,
                                          index)
    with pytest.raises(ValueError, match='index must hold patch positions'):
        cpu_kernels.topk_softmax_backward(grad.clone(), prefix, kept,
                                          index + 8)
