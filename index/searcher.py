"""A loaded index version as a service searches it: vectors by scene id (search by an
archive scene), membership, and filtered search that returns k hits whenever k allowed
scenes exist."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import faiss
import numpy as np

from index.gpu import configure_copy
from index.store import IDS_FILE, LoadedIndex
from index.vectors import (
    SearchResult,
    SearchSettings,
    configure,
    exact_search,
    find_ivf,
    search,
)


class UnknownSceneError(KeyError):
    """A scene id the index does not hold."""


class ServedIndex(Protocol):
    """What the service needs of an index: `Searcher` (FAISS versions on disk) and
    `index.backends.MilvusSearcher` (a Milvus collection) provide it."""

    filters_natively: bool
    """True: label and folder filters go to the index itself; False: the service turns
    them into an allow-list of ids in SQL."""

    @property
    def version(self) -> str: ...

    @property
    def model_version(self) -> str: ...

    @property
    def factory(self) -> str: ...

    @property
    def created(self) -> str: ...

    @property
    def count(self) -> int: ...

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray: ...

    def search(
        self, queries: np.ndarray, k: int, allow_ids: np.ndarray | None = None
    ) -> SearchResult: ...


class Searcher:
    filters_natively = False

    def __init__(
        self,
        loaded: LoadedIndex,
        settings: SearchSettings | None = None,
        unfiltered: faiss.Index | None = None,
    ) -> None:
        self.loaded = loaded
        self.index = loaded.index
        self.settings = settings or SearchSettings()
        self.unfiltered = unfiltered
        """A copy of the index on GPUs (or sharded) that answers unfiltered queries. Such
        copies do not honour id selectors, so a filtered query searches `index`, the CPU
        index, which does."""
        if unfiltered is not None:
            configure_copy(unfiltered, self.index, self.settings)
        self.ids = np.load(loaded.path.parent / IDS_FILE)
        """Sorted scene ids held by the index."""
        configure(self.index, self.settings)
        ivf = find_ivf(self.index)
        if ivf is not None and loaded.full_vectors is None:
            # lets an inverted file give back a stored vector by its id
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)

    @property
    def version(self) -> str:
        return self.loaded.manifest.version

    @property
    def model_version(self) -> str:
        return self.loaded.manifest.model_version

    @property
    def factory(self) -> str:
        return self.loaded.manifest.factory

    @property
    def created(self) -> str:
        return self.loaded.manifest.created

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if not len(self.ids):
            return np.zeros(len(ids), dtype=bool)
        rows = np.clip(np.searchsorted(self.ids, ids), 0, len(self.ids) - 1)
        return np.asarray(self.ids[rows] == ids)

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored (exact, for a compressed index) vectors of scenes, in the order given."""
        ids = np.asarray(ids, dtype=np.int64)
        missing = ids[~self.contains(ids)]
        if len(missing):
            raise UnknownSceneError(f"scene {int(missing[0])} is not in index {self.version}")
        full = self.loaded.full_vectors
        if full is not None:
            return np.asarray(full.vectors[full.rows(ids)], dtype=np.float32)
        return np.asarray(self.index.reconstruct_batch(ids), dtype=np.float32)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allow_ids: np.ndarray | None = None,
    ) -> SearchResult:
        """Top-k per query. With an allow-list, an approximate index that finds fewer than k
        allowed scenes (an inverted file visits only some lists) is completed by exact search
        over the allowed scenes, so k hits come back whenever k allowed scenes exist."""
        result = search(
            self.index if allow_ids is not None or self.unfiltered is None else self.unfiltered,
            queries,
            k,
            allow_ids=allow_ids,
            settings=self.settings,
            full_vectors=self.loaded.full_vectors,
        )
        if allow_ids is None:
            return result
        allowed = np.unique(np.asarray(allow_ids, dtype=np.int64))
        allowed = allowed[self.contains(allowed)]
        wanted = min(k, len(allowed))
        if (result.ids[:, :wanted] >= 0).all():
            return result
        exact = exact_search(self.vectors(allowed), allowed, queries, k)
        ids = np.full((len(exact.ids), k), -1, dtype=np.int64)
        scores = np.full((len(exact.ids), k), -np.inf, dtype=np.float32)
        ids[:, : exact.ids.shape[1]] = exact.ids
        scores[:, : exact.ids.shape[1]] = exact.scores
        return SearchResult(ids, scores)
