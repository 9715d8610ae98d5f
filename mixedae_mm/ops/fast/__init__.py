"""The CPU fast path of homologous attention: an autograd Function that
keeps only the selected keys' probabilities for backward, and the C kernel
(``csrc/topk_softmax.c``, compiled on first use) that selects and softmaxes
in one pass where a C compiler exists. Both fall back to PyTorch ops."""
from . import cpu_kernels
from .sparse_attention import sparse_topk_attention

__all__ = ['cpu_kernels', 'sparse_topk_attention']
