"""The GPU memory a pretraining config needs per GPU, estimated from
counts: model states by the bytes per parameter, activations by what
autograd keeps in one forward at two small batches, extrapolated.

``tools/analysis_tools/estimate_memory.py`` is the command line over it
(its docstring says what is and is not counted).
"""
import torch
from mmpretrain.registry import MODELS

from .step_cost import Trainer

__all__ = ['BYTES_PER_TRAINABLE', 'SampleBatchError', 'model_state_bytes',
           'activation_bytes', 'extrapolate', 'estimate']

#: bytes per trainable parameter: fp32 weight, fp32 gradient, AdamW exp_avg
#: and exp_avg_sq
BYTES_PER_TRAINABLE = dict(weights=4, gradients=4, optimizer=8)


class SampleBatchError(ValueError):
    """A batch (the estimated one, or those activations are measured at)
    that cannot be mixed."""


def model_state_bytes(model: torch.nn.Module, world_size: int = 1) -> dict:
    """Bytes per GPU of weights, gradients and AdamW moments (fp32)."""
    if world_size < 1:
        raise ValueError(f'--fsdp-world-size must be >= 1, got {world_size}')
    params = list(model.parameters())
    counts = dict(
        weights=sum(p.numel() for p in params),
        gradients=sum(p.numel() for p in params if p.requires_grad),
        optimizer=sum(p.numel() for p in params if p.requires_grad))
    return {k: counts[k] * BYTES_PER_TRAINABLE[k] / world_size
            for k in counts}


def activation_bytes(model, img_size, batch_sizes, amp='bf16') -> list:
    """Bytes kept for backward by one forward of ``model.loss`` at each
    batch size (random images, CPU)."""
    trainer = Trainer(model, torch.device('cpu'), amp, compile_model=False)
    torch.manual_seed(0)
    return [trainer.saved_bytes(torch.randn(b, 3, *img_size))
            for b in batch_sizes]


def extrapolate(batch_sizes, measured, batch_size) -> float:
    """The line through two (batch, bytes) points, at ``batch_size``."""
    (b0, b1), (m0, m1) = batch_sizes, measured
    per_image = (m1 - m0) / (b1 - b0)
    return m0 + per_image * (batch_size - b0)


def estimate(cfg, batch_size=None, fsdp_world_size=1, sample_batch=4,
             amp='bf16') -> dict:
    """Bytes per GPU for the MixedAE pretraining config ``cfg`` at
    ``batch_size`` images per GPU (default: the config's), by part; raises
    :class:`SampleBatchError` for a batch the model cannot mix."""
    cfg.model.backbone.pop('init_cfg', None)
    model = MODELS.build(cfg.model)
    given = '--batch-size' if batch_size else 'train_dataloader.batch_size'
    batch_size = batch_size or cfg.train_dataloader.batch_size
    group = model.backbone.group_size
    if batch_size % group:
        raise SampleBatchError(
            f'{given} {batch_size} is not a multiple of the mixing group '
            f'size {group} of this config')
    if sample_batch % group:
        raise SampleBatchError(
            f'--sample-batch {sample_batch} is not a multiple of the mixing '
            f'group size {group} of this config')
    size = model.backbone.img_size
    states = model_state_bytes(model, fsdp_world_size)
    samples = (sample_batch, 2 * sample_batch)
    measured = activation_bytes(model, size, samples, amp)
    activations = extrapolate(samples, measured, batch_size)
    return dict(
        batch_size=batch_size,
        fsdp_world_size=fsdp_world_size,
        parameters=sum(p.numel() for p in model.parameters()),
        **{f'{k}_bytes': v for k, v in states.items()},
        sample_batches=samples,
        sample_activation_bytes=measured,
        activation_bytes=activations,
        total_bytes=sum(states.values()) + activations)
