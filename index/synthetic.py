"""Synthetic embeddings with the cluster structure of real ones, for tests and benchmarks.

Unit vectors drawn from a mixture of `centres` Gaussian clusters around random unit
directions, then renormalised. Uniform random vectors would be a poor stand-in: in 128
dimensions they have no meaningful nearest neighbours, and approximate indexes look far
worse on them than on real embeddings.
"""

from __future__ import annotations

import numpy as np


def clustered_unit_vectors(
    count: int,
    dim: int = 128,
    centres: int = 100,
    spread: float = 0.05,
    seed: int = 0,
    chunk: int = 1 << 20,
) -> np.ndarray:
    """(count, dim) float32 unit vectors; `spread` is the per-coordinate standard deviation
    around a cluster's (unit) centre."""
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centres, dim))
    middle /= np.linalg.norm(middle, axis=1, keepdims=True)
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        block = middle[rng.integers(0, centres, n)] + rng.normal(scale=spread, size=(n, dim))
        out[start : start + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out
