"""A training step of MixedAE and of mmpretrain's MAE, built to be measured:
the models of one size (:func:`build_pair`) and a :class:`Trainer` that
steps one of them and measures its time, saved activations and FLOPs.

Used by ``benchmark`` (``tools/analysis_tools/benchmark_vs_mae.py``),
``memory`` and ``gpu_hours`` (``estimate_memory.py``,
``estimate_gpu_hours.py``).
"""
import time

import torch
import torch.utils.checkpoint
from mmpretrain.registry import MODELS

from .flop_counting import flop_counter

__all__ = ['build_pair', 'checkpoint_forward', 'Trainer']


def build_pair(arch: str, img_size: int, patch_size: int, decoder_dim: int,
               decoder_depth: int, decoder_heads: int, with_cp: bool = False):
    backbone = dict(arch=arch, img_size=img_size, patch_size=patch_size)
    decoder = dict(
        decoder_embed_dim=decoder_dim,
        decoder_depth=decoder_depth,
        decoder_num_heads=decoder_heads)
    head = dict(norm_pix=True,
                loss=dict(type='PixelReconstructionLoss', criterion='L2'))
    mixedae = MODELS.build(
        dict(
            type='MixedAE',
            backbone=dict(type='MixedAEViT', with_cp=with_cp, **backbone),
            neck=dict(type='MixedAEPretrainDecoder', with_cp=with_cp,
                      **decoder),
            head=dict(type='MixedAEPretrainHead', **head)))
    width = mixedae.backbone.embed_dims
    mae_arch = arch
    if arch in mixedae.backbone.arch_zoo and arch not in \
            MODELS.get('MAEViT').arch_zoo:
        mae_arch = mixedae.backbone.arch_zoo[arch]  # e.g. 'demo-tiny'
    mae = MODELS.build(
        dict(
            type='MAE',
            backbone=dict(type='MAEViT', mask_ratio=0.75,
                          **dict(backbone, arch=mae_arch)),
            neck=dict(
                type='MAEPretrainDecoder',
                num_patches=mixedae.backbone.num_patches,
                patch_size=patch_size,
                embed_dim=width,
                **decoder),
            head=dict(type='MAEPretrainHead', patch_size=patch_size, **head)))
    if with_cp:  # mmpretrain's MAE has no with_cp: checkpoint it here
        for blocks in (mae.backbone.layers, mae.neck.decoder_blocks):
            for block in blocks:
                checkpoint_forward(block)
    return mixedae, mae


def checkpoint_forward(block: torch.nn.Module) -> None:
    """Make ``block`` recompute its forward in backward (keeps its keys)."""
    forward = block.forward

    def checkpointed(x):
        if torch.is_grad_enabled() and x.requires_grad:
            return torch.utils.checkpoint.checkpoint(
                forward, x, use_reentrant=False)
        return forward(x)

    block.forward = checkpointed


class Trainer:
    """One model, its AdamW and one training step."""

    def __init__(self, model, device, amp, compile_model):
        self.model = model.to(device).train()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.loss_fn = model.loss
        self.compiled = compile_model
        self.device = device
        self.autocast = torch.autocast(
            device.type, dtype=dict(bf16=torch.bfloat16,
                                    fp16=torch.float16).get(amp),
            enabled=amp != 'none')

    def sync(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def forward(self, images):
        with self.autocast:
            losses = self.loss_fn(images, [])
        return sum(v for k, v in losses.items() if k.startswith('loss'))

    def step(self, images, split=None):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.forward(images)
        loss.backward()
        if split is not None:
            self.sync()
            start = time.perf_counter()
        self.optimizer.step()
        self.sync()
        if split is not None:
            split['optimizer'] += time.perf_counter() - start

    def saved_bytes(self, images) -> int:
        """Bytes autograd keeps for backward in one forward: unique storages,
        parameters excluded."""
        params = {p.untyped_storage().data_ptr()
                  for p in self.model.parameters()}
        kept = {}

        def pack(tensor):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in params:
                kept[storage.data_ptr()] = storage.nbytes()
            return tensor

        # eager: dynamo would trace (and recompile) the hook itself
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with self.autocast:
                losses = self.model.loss(images, [])
            loss = sum(v for k, v in losses.items() if k.startswith('loss'))
        del loss
        return sum(kept.values())

    def peak_cuda_bytes(self, images) -> int:
        torch.cuda.reset_peak_memory_stats(self.device)
        self.step(images)
        return torch.cuda.max_memory_allocated(self.device)

    def flops(self, images) -> int:
        counter = flop_counter()
        with counter:
            self.optimizer.zero_grad(set_to_none=True)
            self.forward(images).backward()
        return counter.get_total_flops()
