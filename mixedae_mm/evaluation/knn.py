"""Weighted k-nearest-neighbour classification of frozen features (Wu et
al., CVPR 2018; the kNN probe of mmselfsup and DINO). Pure torch."""
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def weighted_knn_scores(train_feats: Tensor,
                        train_labels: Tensor,
                        query_feats: Tensor,
                        num_classes: int,
                        k: int = 20,
                        temperature: float = 0.07,
                        chunk_size: int = 1024) -> Tensor:
    """Class scores: each query's ``k`` most cosine-similar training
    features vote for their labels with weight ``exp(similarity / T)``.

    Args:
        train_feats: (N, D) training features (any scale: L2-normalised
            here).
        train_labels: (N,) int64 labels in ``[0, num_classes)``.
        query_feats: (M, D) features to classify.
        num_classes: C.
        k: neighbours per query (at most N).
        temperature: T; smaller trusts the nearest neighbours more.
        chunk_size: queries compared at once, bounding the (chunk, N)
            similarity matrix.

    Returns:
        (M, C) float scores; ``argmax`` is the prediction.
    """
    if train_feats.shape[0] != train_labels.shape[0]:
        raise ValueError(f'{train_feats.shape[0]} training features but '
                         f'{train_labels.shape[0]} labels')
    train = F.normalize(train_feats.float(), dim=1)
    labels = train_labels.to(train.device)
    k = min(k, train.shape[0])
    scores = []
    for query in query_feats.float().split(chunk_size):
        similarity = F.normalize(query, dim=1) @ train.T  # (chunk, N)
        top_similarity, top_index = similarity.topk(k, dim=1)
        weights = (top_similarity / temperature).exp()
        scores.append(
            weights.new_zeros(query.shape[0], num_classes).scatter_add_(
                1, labels[top_index], weights))
    return torch.cat(scores)


def knn_accuracy(scores: Tensor, labels: Tensor,
                 topk: Sequence[int] = (1, 5)) -> Dict[str, float]:
    """Top-k accuracies in percent of (M, C) ``scores`` against (M,)
    ``labels``; k larger than C is clipped to C."""
    ranked = scores.topk(min(max(topk), scores.shape[1]), dim=1).indices
    hits = ranked == labels.to(scores.device)[:, None]
    return {f'top{k}': 100. * hits[:, :k].any(1).float().mean().item()
            for k in topk}


def pool_tokens(tokens: Tensor, feature: str) -> Tensor:
    """(B, 1 + L, D) tokens of the last block -> (B, D): the cls token
    (``'cls'``) or the mean of the patch tokens (``'mean'``)."""
    if tokens.dim() != 3:
        raise ValueError(f'expected (batch, tokens, dims) features, got '
                         f'{tuple(tokens.shape)}: kNN needs a ViT whose last '
                         'output keeps the cls token (out_type raw)')
    if feature not in ('cls', 'mean'):
        raise ValueError(f"feature must be 'cls' or 'mean', got {feature!r}")
    return tokens[:, 0] if feature == 'cls' else tokens[:, 1:].mean(1)


@torch.no_grad()
def extract_features(model, loader, feature: str, progress=None):
    """``(features (n, D), labels (n,))`` of every batch of ``loader``
    (mmpretrain data: ``inputs`` and ``data_samples`` with ``gt_label``),
    through the model's data preprocessor and ``extract_feat``. Call it
    with the model in eval mode. ``progress``, if given, is updated once a
    batch (an mmengine ``ProgressBar``)."""
    feats, labels = [], []
    for data in loader:
        inputs = model.data_preprocessor(data, False)['inputs']
        feats.append(pool_tokens(model.extract_feat(inputs)[-1], feature))
        labels.append(torch.stack(
            [sample.gt_label[0] for sample in data['data_samples']]).to(
                feats[-1].device))
        if progress is not None:
            progress.update()
    return torch.cat(feats), torch.cat(labels)
