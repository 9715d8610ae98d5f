"""The C kernels of homologous attention on the CPU (``csrc/topk_softmax.c``).

:func:`ops.topk_attention` calls them through :func:`topk_softmax_forward`
and :func:`topk_softmax_backward` when :func:`available`; otherwise (no C
compiler, or ``MIXEDAE_CPU_KERNELS=0``) it runs the same computation as a
chain of PyTorch ops, which the tests hold it equal to.

The source is compiled on first use with the system C compiler (``$CC``,
else ``cc``; well under a second) for this CPU (``-march=native``), into
``$MIXEDAE_KERNEL_CACHE`` (default ``~/.cache/mixedae_mm/kernels``) under a
name hashed from the source, the flags, the compiler and the CPU's features,
so that a home directory shared by different machines never loads a library
built for another CPU. The library is loaded with ``ctypes`` (no PyTorch
headers: they need C++20 and a minute to compile) and links
``libgomp.so.1``, which resolves to the OpenMP runtime PyTorch's Linux
wheels load, so it shares PyTorch's threads (a torch built against
another OpenMP would get a second runtime beside its own).

The two entry points are registered as PyTorch custom operators
(``torch.ops.mixedae_mm.*``) so that ``torch.compile`` treats them as
opaque calls instead of breaking the graph at a ``ctypes`` call.
"""
import ctypes
import hashlib
import math
import os
import os.path as osp
import shutil
import subprocess
import tempfile
import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor

SOURCE = osp.join(osp.dirname(osp.abspath(__file__)), 'csrc',
                  'topk_softmax.c')
FLAGS = ('-O3', '-march=native', '-fopenmp', '-shared', '-fPIC', '-std=c99')
DISABLE_ENV = 'MIXEDAE_CPU_KERNELS'
CACHE_ENV = 'MIXEDAE_KERNEL_CACHE'
COMPILE_TIMEOUT_S = 300

_library: Optional[ctypes.CDLL] = None
_unavailable_reason: Optional[str] = None


def _cpu_features() -> str:
    """The ``flags`` line of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return line
    except OSError:
        pass
    return ''


def _run(command: list) -> subprocess.CompletedProcess:
    # a compiler that hangs must not hang training: it is given up on
    return subprocess.run(command, capture_output=True, text=True,
                          errors='replace', timeout=COMPILE_TIMEOUT_S)


def _compiler_version(compiler: str) -> str:
    result = _run([compiler, '--version'])
    if result.returncode != 0:
        raise RuntimeError(f'{compiler} --version failed: '
                           f'{result.stderr[-500:]}')
    return result.stdout


def _build(compiler: str, rebuild: bool = False) -> str:
    """Compile the kernels unless a matching build is cached (or
    ``rebuild``); its path."""
    with open(SOURCE, 'rb') as f:
        source = f.read()
    digest = hashlib.sha1(source)
    for part in (' '.join(FLAGS), _compiler_version(compiler),
                 _cpu_features()):
        digest.update(part.encode())
    cache = os.environ.get(
        CACHE_ENV, osp.join(osp.expanduser('~'), '.cache', 'mixedae_mm',
                            'kernels'))
    target = osp.join(cache, f'topk_softmax-{digest.hexdigest()[:16]}.so')
    if osp.exists(target) and not rebuild:
        return target
    os.makedirs(cache, exist_ok=True)
    # built beside the target and renamed onto it: ranks that start
    # together may all build, but none loads a half-written file
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        built = osp.join(tmp, 'topk_softmax.so')
        result = _run([compiler, *FLAGS, SOURCE, '-o', built, '-lm'])
        if result.returncode != 0:
            raise RuntimeError(f'{compiler} failed:\n{result.stderr[-2000:]}')
        os.replace(built, target)
    return target


def _load() -> Optional[ctypes.CDLL]:
    global _library, _unavailable_reason
    if _library is not None or _unavailable_reason is not None:
        return _library
    if os.environ.get(DISABLE_ENV, '1') == '0':
        _unavailable_reason = f'{DISABLE_ENV}=0'
        return None
    compiler = os.environ.get('CC', 'cc')
    try:
        if shutil.which(compiler) is None:
            raise RuntimeError(f'no C compiler {compiler!r} on PATH')
        try:
            library = ctypes.CDLL(_build(compiler))
        except OSError:  # a damaged cached build: built again, once
            library = ctypes.CDLL(_build(compiler, rebuild=True))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        _unavailable_reason = str(error)
        warnings.warn(
            'mixedae_mm: the C kernels of homologous attention could not be '
            f'built ({error}); the CPU runs the slower PyTorch ops instead. '
            'Install a C compiler with OpenMP (gcc) or point $CC at one; '
            f'set {DISABLE_ENV}=0 to silence this.')
        return None
    i64, vp = ctypes.c_int64, ctypes.c_void_p
    library.mixedae_topk_softmax_forward.argtypes = [
        vp, i64, i64, i64, i64, ctypes.c_float, vp, vp, ctypes.c_int
    ]
    library.mixedae_topk_softmax_backward.argtypes = [
        vp, vp, i64, i64, i64, i64, vp, vp, vp, ctypes.c_int
    ]
    library.mixedae_topk_softmax_forward.restype = ctypes.c_int
    library.mixedae_topk_softmax_backward.restype = ctypes.c_int
    _library = library
    return _library


def available() -> bool:
    """Whether the kernels are built and loaded (builds them if needed)."""
    return _load() is not None


def unavailable_reason() -> Optional[str]:
    """Why :func:`available` is False (None when it is True)."""
    _load()
    return _unavailable_reason


def _check(name: str, tensor: Tensor, dtype: torch.dtype,
           shape: Tuple[int, ...]) -> None:
    if (tensor.device.type != 'cpu' or tensor.dtype != dtype
            or not tensor.is_contiguous()):
        raise ValueError(f'{name} must be a contiguous {dtype} CPU tensor, '
                         f'got {tensor.dtype} on {tensor.device} '
                         f'(contiguous: {tensor.is_contiguous()})')
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f'{name} must have shape {tuple(shape)}, got '
                         f'{tuple(tensor.shape)}')


def _check_scores(name: str, scores: Tensor, num_prefix_tokens: int) -> None:
    if scores.dim() < 2 or scores.shape[-1] != scores.shape[-2]:
        raise ValueError(f'{name} must be (..., L, L) square matrices, got '
                         f'{tuple(scores.shape)}')
    if not 0 <= num_prefix_tokens < scores.shape[-1]:
        raise ValueError(f'num_prefix_tokens must be in [0, '
                         f'{scores.shape[-1]}), got {num_prefix_tokens}')
    _check(name, scores, torch.float32, scores.shape)


def _raise_if_failed(status: int) -> None:
    if status != 0:
        raise MemoryError('the attention kernel could not allocate its '
                          'scratch memory')


@torch.library.custom_op('mixedae_mm::topk_softmax_forward',
                         mutates_args=('scores', ))
def topk_softmax_forward(scores: Tensor, num_prefix_tokens: int, top_k: int,
                         scale: float) -> Tuple[Tensor, Tensor]:
    """Homologous attention's softmax, in place.

    Args:
        scores: ``(..., L, L)`` fp32 unscaled ``q @ k^T``, prefix tokens
            first; overwritten with the attention probabilities (prefix
            queries: softmax over all keys; patch queries: over the prefix
            keys and their ``top_k`` highest-scoring patch keys, exact ties
            to the lower position).
        scale: the softmax scale.

    Returns:
        kept ``(..., N, P + top_k)`` fp32, each patch query's probabilities
        on the prefix keys, then on its selected keys; index
        ``(..., N, top_k)`` long, the selected patch positions (0-based,
        ascending).
    """
    _check_scores('scores', scores, num_prefix_tokens)
    seq_len = scores.shape[-1]
    p = num_prefix_tokens
    num_patches = seq_len - p
    if not 0 < top_k <= num_patches:
        raise ValueError(f'top-k must be in [1, {num_patches}], got {top_k}')
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f'scale must be finite and > 0, got {scale}')
    batch = scores.shape[:-2]
    kept = scores.new_empty(*batch, num_patches, p + top_k)
    index = torch.empty(*batch, num_patches, top_k, dtype=torch.long)
    _raise_if_failed(_load().mixedae_topk_softmax_forward(
        scores.data_ptr(), scores.numel() // seq_len**2, seq_len, p, top_k,
        scale, kept.data_ptr(), index.data_ptr(), torch.get_num_threads()))
    return kept, index


@topk_softmax_forward.register_fake
def _(scores, num_prefix_tokens, top_k, scale):
    batch = scores.shape[:-2]
    num_patches = scores.shape[-1] - num_prefix_tokens
    return (scores.new_empty(*batch, num_patches, num_prefix_tokens + top_k),
            scores.new_empty(*batch, num_patches, top_k, dtype=torch.long))


@torch.library.custom_op('mixedae_mm::topk_softmax_backward',
                         mutates_args=('grad', ))
def topk_softmax_backward(grad: Tensor, prefix_probs: Tensor, kept: Tensor,
                          index: Tensor) -> Tensor:
    """Backward of :func:`topk_softmax_forward`, in place.

    Args:
        grad: ``(..., L, L)`` fp32 gradient of the probabilities; overwritten
            with the gradient of the scaled logits (zero at unselected keys).
        prefix_probs: ``(..., P, L)`` the prefix queries' probabilities.
        kept, index: from :func:`topk_softmax_forward`.

    Returns:
        ``(..., L, L)`` fp32, the dense probabilities, rebuilt.
    """
    if prefix_probs.dim() < 2:
        raise ValueError('prefix_probs must be (..., P, L), got '
                         f'{tuple(prefix_probs.shape)}')
    p = prefix_probs.shape[-2]
    _check_scores('grad', grad, p)
    batch, seq_len = tuple(grad.shape[:-2]), grad.shape[-1]
    top_k = index.shape[-1] if index.dim() else 0
    if not 0 < top_k <= seq_len - p:
        raise ValueError(f'index must select 1 to {seq_len - p} keys per '
                         f'query, got {top_k}')
    _check('prefix_probs', prefix_probs, torch.float32, batch + (p, seq_len))
    _check('kept', kept, torch.float32, batch + (seq_len - p, p + top_k))
    _check('index', index, torch.long, batch + (seq_len - p, top_k))
    low, high = torch.aminmax(index) if index.numel() else (0, 0)
    if not 0 <= low <= high < seq_len - p:
        raise ValueError(f'index must hold patch positions in [0, '
                         f'{seq_len - p})')
    probs = torch.empty_like(grad)
    _raise_if_failed(_load().mixedae_topk_softmax_backward(
        grad.data_ptr(), probs.data_ptr(), grad.numel() // seq_len**2,
        seq_len, p, top_k, prefix_probs.data_ptr(), kept.data_ptr(),
        index.data_ptr(), torch.get_num_threads()))
    return probs


@topk_softmax_backward.register_fake
def _(grad, prefix_probs, kept, index):
    return torch.empty_like(grad)
