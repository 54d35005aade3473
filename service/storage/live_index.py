"""The archive as SQL has it now, searched: the index version in service, less the scenes
removed since it was built, plus the scenes added through the API since (their embeddings
kept in SQL, `scene_vectors`).

A `LiveIndex` joins one `ServedIndex` (any store) with one catalog generation
(`SceneTable`): its searches leave out the indexed scenes SQL no longer holds, search the
written embeddings exactly (they are few: a reindex folds them into the next version) and
merge both by score, so a search returns k hits whenever k scenes pass its filter, and never
a scene that was removed. It is made once per (index version, catalog generation) and cached
by the catalog; with nothing added or removed it is the index version itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from index.filters import SceneFilter
from index.id_mask import IdMask
from index.results import MAX_FETCH, MAX_K, SearchResult, check_k, in_sorted
from index.stores import ServedIndex, UnknownSceneError
from service.storage.scene_reading import WrittenVectors
from service.storage.scene_table import SceneTable

ID_FILTERS = frozenset({"exclude_ids", "allow_ids"})


class LiveIndex:
    """One index version with one catalog generation's removals and additions (see the
    module docstring). Implements `ServedIndex`."""

    def __init__(self, base: ServedIndex, table: SceneTable) -> None:
        self.base = base
        # labels and folders come from SQL (corrected there since the version was built):
        # the store filters by ids only, an allow-list made from the catalog's arrays
        self.native_filters = base.native_filters & ID_FILTERS
        base_ids = base.held_ids()
        self.generation = table.generation
        written: WrittenVectors = table.written
        # the written scenes the version does not hold, and still in SQL (a row's embedding
        # goes with it, so all are)
        extra = ~in_sorted(base_ids, written.ids) if len(written.ids) else np.zeros(0, bool)
        self.added_ids = written.ids[extra]
        self.added_vectors = written.vectors[extra] if len(self.added_ids) else None
        self.added_probabilities = (
            written.probabilities[extra]
            if written.probabilities is not None and len(self.added_ids)
            else None
        )
        still = in_sorted(table.ids, base_ids)
        self.removed = base_ids[~still]
        """Ids the version holds that SQL no longer does (sorted)."""
        self._kept = base_ids[still] if len(self.removed) else base_ids

    @property
    def changed(self) -> bool:
        return bool(len(self.added_ids) or len(self.removed))

    @property
    def version(self) -> str:
        return self.base.version

    def held_ids(self) -> np.ndarray:
        if not self.changed:
            return self.base.held_ids()
        return np.union1d(self._kept, self.added_ids)

    @property
    def model_version(self) -> str:
        return self.base.model_version

    @property
    def factory(self) -> str:
        return self.base.factory

    @property
    def created(self) -> str:
        return self.base.created

    @property
    def count(self) -> int:
        return self.base.count - len(self.removed) + len(self.added_ids)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        in_base = self.base.contains(ids) & ~in_sorted(self.removed, ids)
        return in_base | in_sorted(self.added_ids, ids)

    def _split(self, ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(ids, dtype=np.int64)
        added = in_sorted(self.added_ids, ids)
        gone = ids[~added & in_sorted(self.removed, ids)]
        if len(gone):
            raise UnknownSceneError(f"scene {int(gone[0])} has been removed")
        return ids, added

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        ids, added = self._split(ids)
        if not added.any():
            return self.base.vectors(ids)
        assert self.added_vectors is not None
        out = np.empty((len(ids), self.added_vectors.shape[1]), dtype=np.float32)
        out[added] = self.added_vectors[np.searchsorted(self.added_ids, ids[added])]
        if (~added).any():
            out[~added] = self.base.vectors(ids[~added])
        return out

    def probabilities(self, ids: Sequence[int] | np.ndarray) -> np.ndarray | None:
        ids, added = self._split(ids)
        if not added.any():
            return self.base.probabilities(ids)
        if self.added_probabilities is None:
            return None
        mine = self.added_probabilities[np.searchsorted(self.added_ids, ids[added])]
        if np.isnan(mine).any():
            return None
        out = np.empty((len(ids), mine.shape[1]), dtype=np.float32)
        out[added] = mine
        if (~added).any():
            theirs = self.base.probabilities(ids[~added])
            if theirs is None or theirs.shape[1] != mine.shape[1]:
                return None
            out[~added] = theirs
        return out

    def descriptors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray | None:
        """The version's descriptors; None when a scene was added since (SQL keeps no
        descriptors: the next reindex folds it in)."""
        ids, added = self._split(ids)
        return None if added.any() else self.base.descriptors(ids)

    def seen(self, ids: Sequence[int] | np.ndarray) -> np.ndarray | None:
        """The version's record; a scene added since is content the model never saw."""
        ids, added = self._split(ids)
        if not added.any():
            return self.base.seen(ids)
        out = np.zeros(len(ids), dtype=bool)
        if (~added).any():
            theirs = self.base.seen(ids[~added])
            if theirs is None:
                return None
            out[~added] = theirs
        return out

    def search(self, queries: np.ndarray, k: int, where: SceneFilter | None = None) -> SearchResult:
        """Top-k per query over the version's scenes still in SQL and the added ones."""
        check_k(k)
        where = where or SceneFilter()
        queries = np.asarray(queries, dtype=np.float32).reshape(len(queries), -1)
        base = self.base.search(queries, k, self._base_filter(where))
        if not len(self.added_ids):
            return base
        assert self.added_vectors is not None
        keep = np.ones(len(self.added_ids), dtype=bool)
        if len(where.exclude_ids):
            keep &= ~np.isin(self.added_ids, np.asarray(where.exclude_ids, dtype=np.int64))
        if isinstance(where.allow_ids, IdMask):
            keep &= where.allow_ids.contains(self.added_ids)
        elif where.allow_ids is not None:
            keep &= np.isin(self.added_ids, np.asarray(where.allow_ids, dtype=np.int64))
        added = np.broadcast_to(self.added_ids[keep], (len(queries), int(keep.sum())))
        ids = np.concatenate([base.ids, added], axis=1)
        scores = np.concatenate([base.scores, queries @ self.added_vectors[keep].T], axis=1)
        scores = np.where(ids >= 0, scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")
        ids = np.take_along_axis(ids, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        # a store updated in place (Milvus, incrementally) may hold an added scene before the
        # catalog moves on: one hit per scene, its best
        for row in range(len(ids)):
            _, first = np.unique(ids[row], return_index=True)
            repeated = np.ones(ids.shape[1], dtype=bool)
            repeated[first] = False
            scores[row, repeated & (ids[row] >= 0)] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        ids = np.take_along_axis(ids, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1).astype(np.float32)
        ids = np.where(np.isfinite(scores), ids, -1)
        return SearchResult(ids, scores)

    def _base_filter(self, where: SceneFilter) -> SceneFilter:
        """`where` for the index version: the removed scenes excluded (an allow-list
        without them when it has one, or when excluding them would fetch past MAX_FETCH)."""
        if not len(self.removed):
            return where
        if isinstance(where.allow_ids, IdMask):  # a mask: the removed scenes off a copy
            return replace(where, allow_ids=where.allow_ids.excluding(self.removed))
        if where.allow_ids is not None:
            allowed = np.asarray(where.allow_ids, dtype=np.int64)
            return SceneFilter(
                allow_ids=allowed[~in_sorted(self.removed, allowed)], exclude_ids=where.exclude_ids
            )
        if len(self.removed) + len(where.exclude_ids) + MAX_K <= MAX_FETCH:
            return where.excluding(*self.removed.tolist())
        # many removals since the version was built: search the scenes still there
        # (`grn reindex` folds the removals into a new version)
        return SceneFilter(allow_ids=self._kept, exclude_ids=where.exclude_ids)
