from .knn import (extract_features, knn_accuracy, pool_tokens,
                  weighted_knn_scores)

__all__ = [
    'extract_features', 'knn_accuracy', 'pool_tokens', 'weighted_knn_scores'
]
