"""What an embedding step returns, whichever runs it: `index.embedding_job` in this process
or `index.ray_embed` on Ray. Both import it from here, so the job can hand off to Ray
without Ray importing the job back."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from index.row_files import Rows
from model.archive import BrokenFile


@dataclass
class EmbeddingResult:
    ids: np.ndarray
    """(n,) int64 scene ids, in the order of the scenes given."""
    embeddings: Rows
    """(n, d) float32, unit norm (in memory, or read on demand from the job's files)."""
    probabilities: Rows
    model_version: str
    computed: int
    """Scenes embedded by this call (the rest came from finished shards)."""
    seconds: float
    broken: list[BrokenFile]
    descriptors: Rows | None = None
    """(n, F) float16 unit backbone descriptors, when the job kept them."""

    @property
    def images_per_s(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0


def scene_list_digest(ids: Sequence[int], names: Sequence[str]) -> str:
    """A digest of the (scene id, name) list, naming the shard folder made from it."""
    digest = hashlib.sha256()
    for scene_id, name in zip(ids, names, strict=True):
        digest.update(f"{scene_id}\t{name}\n".encode())
    return digest.hexdigest()
