"""Synthetic embeddings with the cluster structure of real ones, for tests and benchmarks.

Unit vectors drawn from a mixture of `centres` Gaussian clusters around random unit
directions, then renormalised. Uniform random vectors would be a poor stand-in: in 128
dimensions they have no meaningful nearest neighbours, and approximate indexes look far
worse on them than on real embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from index.filters import SceneMeta


CHUNK = 1 << 20
"""Rows drawn at a time: bounds the float64 temporaries of a large draw (the rows a seed
gives depend on it)."""


def clustered_unit_vectors(
    count: int, dim: int = 128, centres: int = 100, spread: float = 0.05, seed: int = 0
) -> np.ndarray:
    """(count, dim) float32 unit vectors; `spread` is the per-coordinate standard deviation
    around a cluster's (unit) centre."""
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centres, dim))
    middle /= np.linalg.norm(middle, axis=1, keepdims=True)
    return _unit_rows(
        count,
        dim,
        lambda n: middle[rng.integers(0, centres, n)] + rng.normal(scale=spread, size=(n, dim)),
    )


def _unit_rows(count: int, dim: int, draw: Callable[[int], np.ndarray]) -> np.ndarray:
    """(count, dim) float32: `draw(n)` rows, CHUNK at a time, each scaled to unit norm."""
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, CHUNK):
        n = min(CHUNK, count - start)
        block = draw(n)
        out[start : start + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def subspace_unit_vectors(
    count: int,
    dim: int = 128,
    *,
    rank: int = 16,
    centres: int = 100,
    within: float = 0.5,
    noise: float = 0.15,
    shift: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """(count, dim) float32 unit vectors from a mixture that lives near a `rank`-dimensional
    subspace, as trained embeddings do (a few dozen labels and concepts span them): cluster
    centres are unit directions of a random subspace, a vector strays from its centre by
    about `within` (norm) inside the subspace and by about `noise` (norm) in every direction;
    `shift` adds one common direction to all (trained embeddings fill a cone, not the whole
    sphere: random pairs of real UCM embeddings have a mean cosine of 0.22), then each is
    renormalised. bench/embedding_fit.py fits the parameters to real embeddings."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, rank)))
    middle = rng.normal(size=(centres, rank))
    middle /= np.linalg.norm(middle, axis=1, keepdims=True)
    common = rng.normal(size=dim)
    common *= shift / np.linalg.norm(common)

    def draw(n: int) -> np.ndarray:
        inside = middle[rng.integers(0, centres, n)]
        inside += rng.normal(scale=within / np.sqrt(rank), size=(n, rank))
        return inside @ basis.T + common + rng.normal(scale=noise / np.sqrt(dim), size=(n, dim))

    return _unit_rows(count, dim, draw)


def random_scene_metas(
    count: int,
    labels: Sequence[str],
    rng: np.random.Generator,
    *,
    label_share: float = 0.2,
    folders: int = 21,
) -> list[SceneMeta]:
    """`count` scenes' filterable metadata, drawn from `rng` scene by scene: each of `labels`
    present with probability `label_share`, then one of `folders` folders (`folder0`, ...)."""
    from index.filters import SceneMeta  # shapely: only where metadata is wanted

    return [
        SceneMeta(
            labels=tuple(name for name in labels if rng.random() < label_share),
            folder=f"folder{int(rng.integers(folders))}",
        )
        for _ in range(count)
    ]


def described_scenes(
    count: int,
    dim: int,
    describe: Callable[[int, np.random.Generator], SceneMeta],
    *,
    queries: int,
    centres: int,
    spread: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, list[SceneMeta], np.ndarray]:
    """`count` scenes as a store takes them: distinct random ids, clustered unit vectors and
    each one's metadata (`describe(i, rng)`, drawn after the ids from the same generator),
    and `queries` more vectors from the same clusters to search with."""
    rng = np.random.default_rng(seed)
    vectors = clustered_unit_vectors(count + queries, dim, centres, spread, seed)
    ids = rng.choice(2**62, size=count, replace=False).astype(np.int64)
    metas = [describe(i, rng) for i in range(count)]
    return ids, vectors[:count], metas, vectors[count:]
