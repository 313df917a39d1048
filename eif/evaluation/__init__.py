"""Retrieval evaluation: faiss kNN and k-means, Recall@K, NMI, MAP@R."""

from eif.evaluation.knn import kmeans, knn, use_gpu
from eif.evaluation.metrics import (
    evaluate_embeddings,
    evaluate_query_gallery,
    map_at_r,
    nmi,
    recall_at_k,
    recall_at_k_query_gallery,
)

__all__ = ["evaluate_embeddings", "evaluate_query_gallery", "kmeans", "knn", "map_at_r", "nmi", "recall_at_k",
           "recall_at_k_query_gallery", "use_gpu"]
