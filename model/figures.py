"""Figures of vectors: what `grn evaluate` (model/evaluate.py) and the promotion gate
(service/usecases/promotion.py) report of a model's embeddings, from numpy arrays alone.

Nothing here imports torch, so the gate runs where the model's ONNX graph embeds the scenes
(the serving image, which has no torch: `grn promote` there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from model import rerank
from model.metrics import (
    KNN_K,
    knn_from_similarities,
    knn_label_scores,
    ranking_metrics,
    retrieval_metrics,
    sample_f1,
)

if TYPE_CHECKING:
    from model.archive import Archive
    from model.card import ModelCard


def same_labels(card: ModelCard, archive: Archive) -> bool:
    return list(card.label_names) == list(archive.label_names)


def _figures(
    found: dict[str, float | dict[str, float]], knn: np.ndarray, query_labels: np.ndarray
) -> dict[str, float]:
    """P@10, mAP and NDCG@10 of a ranking's metrics (`ranking_metrics`) and the k-NN
    sample-F1 of its label scores."""
    return {
        "p_at_10": found["p_at_k"]["10"],  # type: ignore[index]
        "map": float(found["map"]),  # type: ignore[arg-type]
        "ndcg_at_10": found["ndcg_at_k"]["10"],  # type: ignore[index]
        "knn_sample_f1": sample_f1(knn >= 0.5, query_labels),
    }


def retrieval_figures(
    queries: np.ndarray, query_labels: np.ndarray, base: np.ndarray, base_labels: np.ndarray
) -> dict[str, float]:
    """P@10, mAP, NDCG@10 and k-NN sample-F1 of unit vectors."""
    found = retrieval_metrics(queries, query_labels, base, base_labels, (10,))
    knn = knn_label_scores(queries, base, base_labels, k=KNN_K)
    return _figures(found, knn, query_labels)


def reranked_figures(
    query: np.ndarray,
    query_labels: np.ndarray,
    base: np.ndarray,
    base_labels: np.ndarray,
    descriptors: tuple[np.ndarray, np.ndarray],
) -> dict[str, float]:
    """`retrieval_figures` of a search that re-ranks the GRN embedding's nearest with the
    backbone's descriptors (query rows, base rows) as the service does (`model.rerank`)."""
    grn = query @ base.T
    similar = descriptors[0] @ descriptors[1].T
    found = ranking_metrics(rerank.reranked(grn, similar), query_labels, base_labels, (10,))
    knn = knn_from_similarities(rerank.blended_similarities(grn, similar), base_labels)
    return _figures(found, knn, query_labels)


def content_figures(
    seen: np.ndarray,
    query: np.ndarray,
    query_labels: np.ndarray,
    base: np.ndarray,
    base_labels: np.ndarray,
    backbone: tuple[np.ndarray, np.ndarray] | None,
    descriptors: bool = False,
) -> dict[str, Any]:
    """For seen and unseen queries: their count and the figures of the model's embedding
    and, when given, of the frozen backbone's features (query rows, base rows); with
    `descriptors` (those features are the model's own descriptors), of the model's
    embedding re-ranked with them too."""
    out: dict[str, Any] = {}
    for name, rows in (("seen", np.flatnonzero(seen)), ("unseen", np.flatnonzero(~seen))):
        group: dict[str, Any] = {"queries": len(rows)}
        if len(rows):
            group["model"] = retrieval_figures(query[rows], query_labels[rows], base, base_labels)
            if backbone is not None:
                group["backbone"] = retrieval_figures(
                    backbone[0][rows], query_labels[rows], backbone[1], base_labels
                )
                if descriptors:
                    group["reranked"] = reranked_figures(
                        query[rows], query_labels[rows], base, base_labels,
                        (backbone[0][rows], backbone[1]),
                    )  # fmt: skip
        out[name] = group
    return out
