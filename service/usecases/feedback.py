"""Relevance feedback (`POST /search`'s `more_like` and `less_like`): the query moved toward
the scenes to be like and away from those not to be like, as Rocchio's, on the embeddings and
on the backbone's descriptors."""

from __future__ import annotations

import numpy as np

from index.stores import ServedIndex

ROCCHIO = (1.0, 0.75, 0.25)
"""Rocchio's weights of the query, the liked scenes and the disliked ones."""


def feedback_vector(query: np.ndarray | None, more: np.ndarray, less: np.ndarray) -> np.ndarray:
    """Relevance feedback as Rocchio's: the query plus the mean of the scenes to be like,
    minus a quarter of the mean of those not to be like, back on the unit sphere."""
    alpha, beta, gamma = ROCCHIO
    dim = more.shape[1] if len(more) else less.shape[1]
    moved = alpha * query if query is not None else np.zeros(dim, np.float32)
    if len(more):
        moved = moved + beta * more.mean(axis=0)
    if len(less):
        moved = moved - gamma * less.mean(axis=0)
    norm = float(np.linalg.norm(moved))
    if norm == 0:
        raise ValueError("the feedback cancels the query out: like or dislike other scenes")
    return np.asarray(moved / norm, dtype=np.float32)


def feedback_descriptor(
    index: ServedIndex, query: np.ndarray | None, liked: list[int], disliked: list[int]
) -> np.ndarray | None:
    """Relevance feedback on the descriptors, as `feedback_vector` on the embeddings; None
    when a judged scene has no descriptor."""
    more, less = index.descriptors(liked), index.descriptors(disliked)
    if more is None or less is None:
        return None
    return feedback_vector(query, more, less)
