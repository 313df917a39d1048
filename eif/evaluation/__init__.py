"""Retrieval evaluation: Recall@K, NMI, MAP@R (:mod:`.metrics`) on faiss kNN and k-means (:mod:`.knn`).

The kNN helpers are imported from ``eif.evaluation.knn`` directly (re-exporting the function ``knn``
here would shadow the submodule of the same name).
"""

from eif.evaluation.metrics import (
    evaluate_embeddings,
    evaluate_query_gallery,
    map_at_r,
    nmi,
    recall_at_k,
    recall_at_k_query_gallery,
)

__all__ = [
    "evaluate_embeddings",
    "evaluate_query_gallery",
    "map_at_r",
    "nmi",
    "recall_at_k",
    "recall_at_k_query_gallery",
]
