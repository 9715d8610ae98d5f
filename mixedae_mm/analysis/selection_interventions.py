"""What one layer's homologous selection is worth to a trained MixedAE.

On held-out images mixed with a fixed partition, the keys one layer's
homologous attention selects are replaced by chosen ones, and the
pretraining losses are measured again (eval mode, no gradient):

- ``learned``: the layer's own top-k (nothing changed);
- ``own``: exactly the query's own image's patches (the right answer);
- ``random``: ``K`` patches drawn at random (chance: 1 / G of them own);
- ``other``: ``K`` patches of the other images only (always wrong);
- ``skip``: the layer's attention update removed (its MLP still runs).

A layer whose selection matters costs loss when it is made ``other``. The
question this answers (docs/results.md, "The last layer's selection"): does
the contrastive loss on the encoder output still depend on which keys the
last layer picks, or is the image identity already in the residual stream?
The same function gives each layer's attention update against its input.
"""
import contextlib
from typing import Dict, Iterator, List, Optional

import torch
from torch import Tensor

from .. import ops
from ..models.backbones import HomologousAttention
from ..models.backbones.layer_swap import rebuild_attention
from ..utils import eval_mode

INTERVENTIONS = ('learned', 'own', 'random', 'other', 'skip')


def forced_keys(owner: Tensor, choice: str, num_heads: int,
                generator: torch.Generator) -> Tensor:
    """The patch keys every patch query attends to under ``choice``.

    Args:
        owner: ``(M, N)`` partition (``K = N / G`` positions per image).
        choice: ``'own'``, ``'random'`` or ``'other'``.

    Returns:
        ``(M, heads, N, K)`` long key positions (one draw per head).
    """
    num_mixed, num_patches = owner.shape
    top_k = int((owner == 0).sum(1)[0])
    same = owner[:, :, None] == owner[:, None, :]  # (M, N query, N key)
    if choice == 'own':
        # stable sort: each query's own positions first, in position order
        keys = (~same).to(torch.uint8).sort(dim=-1, stable=True).indices
        return keys[..., :top_k][:, None].expand(-1, num_heads, -1, -1)
    noise = torch.rand(num_mixed, num_heads, num_patches, num_patches,
                       generator=generator).to(owner.device)
    if choice == 'other':
        noise = noise.masked_fill(same[:, None], -1.)
    elif choice != 'random':
        raise ValueError(f'unknown choice {choice!r}: choose from '
                         f'{", ".join(INTERVENTIONS)}')
    return noise.topk(top_k, dim=-1).indices


class ForcedSelectionAttention(HomologousAttention):
    """Homologous attention whose keys are chosen from the partition
    ``owner`` (set before each forward) instead of learned."""

    def __init__(self, *args, choice: str, seed: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.choice = choice
        self.owner: Optional[Tensor] = None
        self.generator = torch.Generator().manual_seed(seed)

    def attend(self, q, k, v, top_k, dropout_p) -> ops.TopKAttention:
        learned = super().attend(q, k, v, top_k, dropout_p)
        if self.choice == 'learned':
            return learned
        if self.choice == 'skip':
            # its learned pick stays in homo_accuracy; nothing attended
            return ops.TopKAttention(torch.zeros_like(learned.out),
                                     learned.topk_indices)
        keys = forced_keys(self.owner, self.choice, q.shape[1],
                           self.generator)
        return ops.TopKAttention(
            ops.attention_over_keys(q, k, v, keys, dropout_p=dropout_p),
            keys)

    def forward(self, x, top_k=None, selections=None) -> Tensor:
        out = super().forward(x, top_k, selections)
        # skip: no update at all (the projection's bias included)
        return torch.zeros_like(out) if self.choice == 'skip' else out


@contextlib.contextmanager
def intervention(backbone, layer: int, choice: str,
                 seed: int = 0) -> Iterator[ForcedSelectionAttention]:
    """``backbone.layers[layer]``'s attention replaced by a
    :class:`ForcedSelectionAttention` for the block (same weights)."""
    count = len(backbone.layers)
    if not -count <= layer < count:
        raise ValueError(f'layer {layer} does not exist: the encoder has '
                         f'layers 0-{count - 1}')
    block = backbone.layers[layer]
    original = block.attn
    if not isinstance(original, HomologousAttention):
        raise ValueError(f'layer {layer} has no homologous attention')
    block.attn = rebuild_attention(ForcedSelectionAttention, original,
                                   choice=choice, seed=seed,
                                   fast_attn=original.fast_attn)
    try:
        yield block.attn
    finally:
        block.attn = original


@torch.no_grad()
def losses_on_mixes(model, images: Tensor, batch_size: int, seed: int = 0,
                    forced: Optional[ForcedSelectionAttention] = None
                    ) -> Dict[str, float]:
    """The pretraining losses of ``model`` (a MixedAE) on ``images``
    ``(n, C, H, W)`` mixed in batches of ``batch_size`` (as training
    batches: the contrastive loss compares the samples of a batch), the
    partitions drawn from ``seed`` (the same for every call); means over
    batches of ``loss_rec``, ``loss_homo`` and ``homo_acc`` per layer."""
    from ..visualization.reconstruction import seeded_rng
    backbone = model.backbone
    usable = len(images) - len(images) % batch_size
    if usable == 0:
        raise ValueError(f'{len(images)} images make no batch of '
                         f'{batch_size}: pass more images')
    totals: Dict[str, Tensor] = {}
    batches = images[:usable].split(batch_size)
    with eval_mode(model), seeded_rng(seed, images.device):
        for batch in batches:
            if forced is not None:
                forced.owner = _next_owner(backbone, batch)
            losses = model.loss(batch, [])
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.) + value.detach().float()
    return {name: round(float(value) / len(batches), 5)
            for name, value in totals.items()}


def _next_owner(backbone, batch: Tensor) -> Tensor:
    """The partition the next ``forward_mixed`` of ``batch`` will draw:
    drawn here under a saved RNG state, which is then put back."""
    state = torch.get_rng_state()
    owner = ops.sample_partition(len(batch) // backbone.group_size,
                                 backbone.num_patches, backbone.group_size,
                                 device=batch.device)
    torch.set_rng_state(state)
    return owner


@torch.no_grad()
def attention_update_ratio(model, images: Tensor, batch_size: int,
                           seed: int = 0) -> List[float]:
    """Per encoder layer, the mean over tokens of ``|attn(ln1(x))| / |x|``
    on mixed ``images``, ``x`` the layer's input: how far each layer's
    attention moves the residual stream."""
    from ..visualization.reconstruction import seeded_rng
    layers = model.backbone.layers
    streams: List[List[Tensor]] = [[] for _ in layers]
    updates: List[List[Tensor]] = [[] for _ in layers]

    def keep_input(i):
        return lambda module, args: streams[i].append(args[0].norm(dim=-1))

    def keep_output(i):
        return lambda module, args, out: updates[i].append(out.norm(dim=-1))

    handles = [hook for i, layer in enumerate(layers) for hook in (
        layer.register_forward_pre_hook(keep_input(i)),
        layer.attn.register_forward_hook(keep_output(i)))]
    usable = len(images) - len(images) % batch_size
    try:
        with eval_mode(model), seeded_rng(seed, images.device):
            for batch in images[:usable].split(batch_size):
                model.loss(batch, [])
    finally:
        for handle in handles:
            handle.remove()
    return [round(float(torch.cat([(u / s).flatten() for u, s in
                                   zip(updates[i], streams[i])]).mean()), 5)
            for i in range(len(layers))]


def run_interventions(model, images: Tensor, batch_size: int,
                      layers: List[int], choices: List[str],
                      partition_seeds: List[int], log=print) -> dict:
    """Every ``(layer, choice)`` intervention on the same partitions (one
    set per seed in ``partition_seeds``); returns the losses of each
    (``conditions['L<layer> <choice>'][seed]``, ``'learned'`` once), each
    layer's attention update ratio, and the paired differences against
    ``learned`` (``deltas``: mean and spread over the partition seeds)."""
    unknown = [c for c in choices if c not in INTERVENTIONS[1:]]
    if unknown:
        raise ValueError(f'unknown intervention {unknown[0]!r}: choose from '
                         f'{", ".join(INTERVENTIONS[1:])}')
    conditions = {'learned': {seed: losses_on_mixes(model, images,
                                                     batch_size, seed)
                              for seed in partition_seeds}}
    for layer in layers:
        for choice in choices:
            name = f'L{layer} {choice}'
            with intervention(model.backbone, layer, choice) as forced:
                conditions[name] = {
                    seed: losses_on_mixes(model, images, batch_size, seed,
                                          forced)
                    for seed in partition_seeds}
            log(f'{name}: loss_homo ' + ', '.join(
                f'{c["loss_homo"]:.4f}' for c in conditions[name].values()))
    return dict(conditions=conditions, deltas=paired_deltas(conditions),
                update_ratio=attention_update_ratio(
                    model, images, batch_size, partition_seeds[0]))


def paired_deltas(conditions: dict) -> dict:
    """Per condition and loss term, the mean and min / max over partition
    seeds of (condition - learned) on the same partitions."""
    learned = conditions['learned']
    deltas = {}
    for name, by_seed in conditions.items():
        if name == 'learned':
            continue
        deltas[name] = {}
        for term in ('loss_homo', 'loss_rec'):
            diffs = [by_seed[s][term] - learned[s][term] for s in by_seed]
            deltas[name][term] = dict(
                mean=round(sum(diffs) / len(diffs), 5),
                min=round(min(diffs), 5), max=round(max(diffs), 5))
    return deltas


def markdown_deltas(result: dict, term: str = 'loss_homo') -> str:
    """Table: a row per layer, a column per intervention, cells the mean
    change of ``term`` (min–max over partition seeds), plus the layer's
    learned homologous accuracy and attention update ratio."""
    deltas = result['deltas']
    layers = sorted({int(n.split()[0][1:]) for n in deltas})
    choices = [c for c in INTERVENTIONS[1:]
               if any(n.endswith(f' {c}') for n in deltas)]
    learned = list(result['conditions']['learned'].values())
    header = (['layer', 'learned homo acc', 'attn update / input (norms)'] +
              [f'{c}: Δ {term}' for c in choices])
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for layer in layers:
        acc = sum(l[f'homo_acc_l{layer}'] for l in learned) / len(learned)
        cells = [str(layer), f'{acc:.3f}',
                 f'{result["update_ratio"][layer]:.2f}']
        for choice in choices:
            d = deltas[f'L{layer} {choice}'][term]
            cells.append(f'{d["mean"]:+.3f} ({d["min"]:+.3f}–'
                         f'{d["max"]:+.3f})')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
