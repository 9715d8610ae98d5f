"""Linear probe and fine-tuning of a ViT encoder on images held in memory.

Pure torch over ``(n, C, H, W)`` float tensors already normalised as the
model's data preprocessor does, so a small study evaluates many encoders
without a data pipeline per step. Used by
``tools/analysis_tools/ablation_study.py``; the ImageNet-scale protocols
are the configs in ``configs/finetune/``.
"""
import itertools
import math
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils import eval_mode


def plain_tokens(backbone: nn.Module, images: Tensor) -> Tensor:
    """``(B, 1 + L, D)`` last-layer tokens of a MixedAEViT or mmpretrain
    MAEViT run as a plain ViT (no mixing, no masking)."""
    return backbone(images, mask=None)[-1]


@torch.no_grad()
def encode(backbone: nn.Module, images: Tensor, batch_size: int = 500
           ) -> Dict[str, Tensor]:
    """Frozen features of ``images``: ``{'cls': (n, D), 'mean': (n, D)}``,
    the cls token and the mean patch token, in eval mode."""
    cls, mean = [], []
    with eval_mode(backbone):
        for chunk in images.split(batch_size):
            tokens = plain_tokens(backbone, chunk)
            cls.append(tokens[:, 0])
            mean.append(tokens[:, 1:].mean(1))
    return dict(cls=torch.cat(cls), mean=torch.cat(mean))


def top1(logits: Tensor, labels: Tensor) -> float:
    return 100. * (logits.argmax(1) == labels).float().mean().item()


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Factor of the base lr: linear warm-up, then half a cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) /
                               max(1, total - warmup)))


def linear_probe(train_feats: Tensor, train_labels: Tensor,
                 test_feats: Tensor, test_labels: Tensor, *,
                 epochs: int = 30, batch_size: int = 1024, lr: float = 0.1,
                 seed: int = 0) -> float:
    """Top-1 (%) of a linear classifier on frozen features.

    As MAE's linear probe: a BatchNorm without affine parameters before the
    linear layer (features of masked-image models have uneven scales), SGD
    with momentum, no weight decay, cosine schedule.
    """
    generator = torch.Generator().manual_seed(seed)
    num_classes = int(train_labels.max()) + 1
    probe = nn.Sequential(nn.BatchNorm1d(train_feats.shape[1], affine=False),
                          nn.Linear(train_feats.shape[1], num_classes))
    nn.init.trunc_normal_(probe[1].weight, std=0.01,
                          generator=generator)
    nn.init.zeros_(probe[1].bias)
    optimizer = torch.optim.SGD(probe.parameters(), lr=lr, momentum=0.9)
    steps_per_epoch = math.ceil(len(train_feats) / batch_size)
    total = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(train_feats), generator=generator)
        for index in order.split(batch_size):
            for group in optimizer.param_groups:
                group['lr'] = lr * cosine_lr(step, total, steps_per_epoch)
            loss = F.cross_entropy(probe(train_feats[index]),
                                   train_labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    probe.eval()
    with torch.no_grad():
        return top1(probe(test_feats), test_labels)


def random_crop_flip(images: Tensor, pad: int,
                     generator: torch.Generator) -> Tensor:
    """Each image shifted by up to ``pad`` pixels (zero padding: the
    normalised mean) and flipped left-right with probability 1/2, batched
    without a per-image loop."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (batch, 1, 1), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (batch, 1, 1), generator=generator)
    flip = torch.rand(batch, generator=generator) < 0.5
    cols = torch.arange(width).expand(batch, 1, width)
    cols = torch.where(flip[:, None, None], width - 1 - cols, cols)
    rows = (dy + torch.arange(height)[None, :, None]).expand(-1, -1, width)
    cols = (dx + cols).expand(-1, height, -1)
    flat = rows * padded.shape[-1] + cols  # (B, H, W) into the padded image
    gathered = padded.flatten(2).gather(
        2, flat.flatten(1)[:, None].expand(-1, images.shape[1], -1))
    return gathered.view_as(images)


def layer_decay_groups(backbone: nn.Module, head: nn.Module, lr: float,
                       layer_decay: float, weight_decay: float) -> list:
    """AdamW parameter groups with layer-wise lr decay (BEiT/MAE), by the
    recipes' rule (:func:`mixedae_mm.engine.optim.layer_decay_param_groups`)
    with ``backbone`` named ``backbone.*`` and ``head`` ``head.*``: layer
    ``i`` of ``L`` gets ``lr * decay ** (L - i)``; the embeddings count as
    layer 0, the final norm and the head as ``L + 1``. Biases, norms and
    the embeddings and tables (``NO_DECAY_NAMES``) have no weight decay.
    On the study's encoders these are the groups of the study's committed
    results (tests/test_probes.py holds them equal)."""
    from ..engine.optim import layer_decay_param_groups
    named = itertools.chain(
        (('backbone.' + n, p) for n, p in backbone.named_parameters()),
        (('head.' + n, p) for n, p in head.named_parameters()))
    return list(layer_decay_param_groups(
        named, len(backbone.layers), lr, layer_decay, weight_decay).values())


class MeanPoolClassifier(nn.Module):
    """Encoder + mean of the patch tokens + linear layer (the MAE fine-tune
    head's global pooling)."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.embed_dims, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(plain_tokens(self.backbone, images)[:, 1:].mean(1))


def fine_tune(backbone: nn.Module, train_images: Tensor, train_labels: Tensor,
              test_images: Tensor, test_labels: Tensor, *, epochs: int,
              batch_size: int = 128, lr: float = 1e-3,
              layer_decay: float = 0.75, weight_decay: float = 0.05,
              warmup_epochs: float = 1., crop_pad: int = 2, seed: int = 0,
              on_step: Optional[Callable[[int, int], None]] = None) -> float:
    """Top-1 (%) on the test images after fine-tuning every weight of
    ``backbone`` (changed in place) with a new linear head.

    AdamW with layer-wise lr decay, linear warm-up then cosine, label
    smoothing 0.1, random shifts and flips; the same recipe for every
    encoder, pretrained or random. ``on_step(step, total)`` reports
    progress.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the head's initialisation
    num_classes = int(train_labels.max()) + 1
    model = MeanPoolClassifier(backbone, num_classes)
    groups = layer_decay_groups(backbone, model.head, lr, layer_decay,
                                weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    batch_size = min(batch_size, len(train_images))
    steps_per_epoch = len(train_images) // batch_size
    total = epochs * steps_per_epoch
    warmup = int(warmup_epochs * steps_per_epoch)
    model.train()
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(train_images), generator=generator)
        for index in order[:steps_per_epoch * batch_size].split(batch_size):
            factor = cosine_lr(step, total, warmup)
            for group in optimizer.param_groups:
                group['lr'] = lr * group['lr_scale'] * factor
            images = random_crop_flip(train_images[index], crop_pad,
                                      generator)
            loss = F.cross_entropy(model(images), train_labels[index],
                                   label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if on_step is not None:
                on_step(step, total)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(chunk) for chunk in test_images.split(500)])
    return top1(logits, test_labels)
