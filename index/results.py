"""What every search returns, and exact search and recall in numpy: no FAISS here, so
`index.torch_exact` and its device check run where only torch is installed (the GPU
machine)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_K = 1000
"""The most hits a search may ask for."""
MAX_FETCH = 2048
"""The most candidates an index is asked for inside a search: k plus the ids a filter
excludes (FAISS's GPU indexes answer at most 2048)."""


class IndexSearchError(ValueError):
    """A search asked for something the index cannot give (bad k, wrong dimension)."""


def check_k(k: int, limit: int = MAX_K) -> None:
    if not 1 <= k <= limit:
        raise IndexSearchError(f"k must be between 1 and {limit}, got {k}")


@dataclass(frozen=True)
class SearchResult:
    ids: np.ndarray
    """(queries, k) int64 scene ids, -1 where fewer than k vectors qualified."""
    scores: np.ndarray
    """(queries, k) float32 inner products, best first."""


SCORES_PER_CHUNK = 1 << 20
"""Scores exact search holds at once (4 MiB of float32, and their 8 MiB of int64 places):
a recall measure's 1,000 queries score 1,048 rows at a time."""
ROWS_PER_CHUNK = 1 << 16
"""Rows of the archive exact search reads at once (a file's rows are read chunk by chunk)."""


def exact_search(vectors: Any, ids: np.ndarray, queries: np.ndarray, k: int) -> SearchResult:
    """Brute force in numpy: the reference every index is measured against. `vectors`: an
    array, or rows read on demand (anything sliced into arrays, as `index.vectors.VectorFile`).
    The archive is scored in chunks of at most ROWS_PER_CHUNK rows and SCORES_PER_CHUNK
    scores, so memory stays the same whatever the archive's size and the number of queries
    (a chunk of 262,144 rows for 1,000 queries held 4 GB of scores and their places)."""
    queries = np.atleast_2d(queries).astype(np.float32)
    k = min(k, len(vectors))
    chunk = max(1, min(ROWS_PER_CHUNK, SCORES_PER_CHUNK // max(len(queries), 1)))
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(vectors), chunk):
        scores = queries @ np.asarray(vectors[start : start + chunk], dtype=np.float32).T
        take = min(k, scores.shape[1])
        top = np.argpartition(scores, scores.shape[1] - take, axis=1)[:, -take:]
        best_scores = np.hstack([best_scores, np.take_along_axis(scores, top, axis=1)])
        best_rows = np.hstack([best_rows, top + start])
        del scores, top
        if best_scores.shape[1] > k:
            keep = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
            best_scores = np.take_along_axis(best_scores, keep, axis=1)
            best_rows = np.take_along_axis(best_rows, keep, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    rows = np.take_along_axis(best_rows, order, axis=1)
    return SearchResult(ids[rows].astype(np.int64), np.take_along_axis(best_scores, order, axis=1))


def recall_at_k(
    found: np.ndarray,
    truth: np.ndarray,
    k: int = 10,
    found_scores: np.ndarray | None = None,
    truth_scores: np.ndarray | None = None,
) -> float:
    """Mean fraction of each query's true top k that the index returned in its top k.

    With scores, a returned vector that ties the k-th true score also counts: among exactly
    equal vectors (duplicate scenes) any of them is a correct answer. Pass scores only when
    they are exact inner products: a compressed index's approximate scores would let wrong
    answers pass as ties."""
    hits = []
    for row, (f, t) in enumerate(zip(found, truth, strict=True)):
        true_ids = set(t[:k].tolist())
        hit = len(set(f[:k].tolist()) & true_ids)
        if found_scores is not None and truth_scores is not None and len(t):
            kth = truth_scores[row][min(k, len(t)) - 1]
            scores = found_scores[row][:k]
            hit += sum(
                1
                for i, s in zip(f[:k].tolist(), scores, strict=True)
                if i >= 0 and i not in true_ids and s >= kth - 1e-6
            )
        hits.append(min(k, hit))
    return float(np.mean(hits) / k) if hits else 1.0


def in_sorted(sorted_ids: np.ndarray, ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Which of `ids` are in `sorted_ids` (sorted ascending), by binary search: a boolean
    array (np.isin would sort both, every call)."""
    ids = np.asarray(ids, dtype=np.int64)
    if not len(sorted_ids):
        return np.zeros(len(ids), dtype=bool)
    rows = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
    return np.asarray(sorted_ids[rows] == ids)


def sorted_unique(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """`ids` ascending without repeats, as int64: as given when they already are (the
    catalog's allow-lists are), else through np.unique. Checking is one pass; np.unique
    hashes or sorts every call, 30 ms for 50,000 ids on this machine under load."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])):
        return ids
    return np.unique(ids)
