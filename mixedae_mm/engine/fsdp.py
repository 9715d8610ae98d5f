"""What FSDP (mmengine's ``FSDPStrategy``) needs from mixedae_mm.

The ViT encoder runs its layers' attention and MLP itself
(:func:`~mixedae_mm.models.backbones.mixedae_vit.encoder_layer_forward`,
for homologous attention and windows), not through
``TransformerEncoderLayer.forward``; an FSDP unit's parameters are
gathered only when the unit's own ``forward`` runs. So the units are the
attention and the MLP of every transformer layer, encoder and decoder
alike; the rest (embeddings, norms, heads) stays in the root unit.
"""
import torch
import torch.distributed as dist
from mmcv.cnn.bricks.transformer import FFN
from mmpretrain.models.utils import MultiheadAttention
from torch import nn

#: modules that become FSDP units (each one called through its forward)
WRAPPED_MODULES = (MultiheadAttention, FFN)


def attention_and_mlp_wrap_policy(module: nn.Module, recurse: bool,
                                  nonwrapped_numel: int) -> bool:
    """FSDP ``auto_wrap_policy``: wrap each attention and MLP module.

    In a config: ``strategy.model_wrapper.auto_wrap_policy=dict(type=
    'mixedae_mm.engine.fsdp.attention_and_mlp_wrap_policy')``.
    """
    if recurse:
        return True
    return isinstance(module, WRAPPED_MODULES)


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` is wrapped by FSDP: each rank then holds only a
    shard of the parameters and gradients, and saving a checkpoint is a
    collective call on every rank."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    return isinstance(model, FullyShardedDataParallel)


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over all ranks (the tensor stays on its device: no
    host sync)."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
    return value
