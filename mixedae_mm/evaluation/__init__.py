from .knn import knn_accuracy, weighted_knn_scores

__all__ = ['knn_accuracy', 'weighted_knn_scores']
