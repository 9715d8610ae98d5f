"""``torch.utils.flop_counter.FlopCounterMode`` that also counts attention
on the CPU.

torch's counter has formulas for the CUDA kernels of
``F.scaled_dot_product_attention`` but not for the CPU one
(``_scaled_dot_product_flash_attention_for_cpu``), which it then counts as
0 FLOPs: every SDPA attention (mmpretrain's ViT layers, MAE's encoder, the
decoders) would vanish from a CPU count while explicit matmuls (MixedAE's
top-k attention) would not. This adds torch's own SDPA formulas for that op
and its backward.
"""
import torch
from torch.utils.flop_counter import (FlopCounterMode,
                                      sdpa_backward_flop_count,
                                      sdpa_flop_count)

_aten = torch.ops.aten


def _cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_shape=None,
                       **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


CPU_ATTENTION = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward:
    _cpu_sdpa_backward,
}


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that counts CPU attention too."""
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION)
