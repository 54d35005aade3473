"""FAISS as the vector store (the embedded default): index versions in a folder on disk.

The versions live under `index_root` (`index.stores.faiss_versions.IndexStore`:
`versions/<version>/`, a `current` pointer switched atomically);
`index.stores.faiss_build.reindex` builds them. A served version (`Searcher`) answers id
allow-lists and exclusions itself; label, folder and split filters reach it as an
allow-list computed in SQL. With faiss-gpu and GPUs, unfiltered searches run on a copy of
the index on all GPUs (`index.gpu`).

`FaissCollection` is the same search over an in-memory index with its filter metadata beside
it: the reference the Milvus store is checked against, and the benchmark's baseline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from index.descriptors import LEGACY as LEGACY_DESCRIPTORS
from index.descriptors import decoded
from index.filters import SceneFilter, SceneMeta
from index.gpu import can_use_gpu, configure_copy, gpu_count, to_gpus
from index.id_mask import IdMask
from index.masked_scan import MaskedScan
from index.results import (
    MAX_FETCH,
    IndexSearchError,
    SearchResult,
    check_k,
    exact_search,
    in_sorted,
    sorted_unique,
)
from index.stores.base import ReindexAction, ReindexOptions, StoreVersion, UnknownSceneError
from index.stores.faiss_versions import IDS_FILE, IndexStore, LoadedIndex
from index.vectors import SearchSettings, configure, find_ivf, make_index, search

if TYPE_CHECKING:
    from index.stores.settings import StoreSettings
    from model.archive import Archive

log = logging.getLogger("grn.index")

NATIVE_FILTERS = frozenset({"exclude_ids", "allow_ids"})
EXACT_ALLOWED = 32_768
"""Allow-lists up to this size are searched exactly over their own vectors: an inverted
file sees only the allowed scenes in the lists it probes (recall@10 0.12 for a 1% box of
1M scenes, bench/geo_bench.py), and scoring a few thousand vectors costs less than probing."""


def _without_excluded(result: SearchResult, excluded: Sequence[int], k: int) -> SearchResult:
    """The first k hits of each row that are not excluded (padded with -1)."""
    drop = np.isin(result.ids, np.asarray(excluded, dtype=np.int64))
    ids = np.full((len(result.ids), k), -1, dtype=np.int64)
    scores = np.full((len(result.ids), k), -np.inf, dtype=np.float32)
    for row in range(len(result.ids)):
        kept = ~drop[row]
        found = result.ids[row][kept][:k]
        ids[row, : len(found)] = found
        scores[row, : len(found)] = result.scores[row][kept][:k]
    return SearchResult(ids, scores)


def _excluded_fetch(k: int, excluded: Sequence[int], count: int) -> int:
    """How many candidates to ask for so that k remain after dropping `excluded`."""
    fetch = min(k + len(set(excluded)), max(count, 1))
    if fetch > MAX_FETCH:
        raise IndexSearchError(f"k plus the excluded ids may not exceed {MAX_FETCH}")
    return fetch


class Searcher:
    """A FAISS index version as the service searches it: vectors by scene id (search by an
    archive scene), membership, and filtered search that returns k hits whenever k allowed
    scenes exist."""

    native_filters = NATIVE_FILTERS

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
        self.scan = MaskedScan.of(self.index) if loaded.full_vectors is None else None
        """Searches restricted by an `IdMask` read the vectors in place (`index.masked_scan`);
        None for a compressed index (FAISS's selectors then)."""

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
        return in_sorted(self.ids, ids)

    def held_ids(self) -> np.ndarray:
        return self.ids

    def _check_held(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        missing = ids[~self.contains(ids)]
        if len(missing):
            raise UnknownSceneError(f"scene {int(missing[0])} is not in index {self.version}")
        return ids

    def probabilities(self, ids: Sequence[int] | np.ndarray) -> np.ndarray | None:
        kept = self.loaded.probabilities
        if kept is None:
            return None
        ids = self._check_held(ids)
        return np.asarray(kept.vectors[kept.rows(ids)], dtype=np.float32)

    def descriptors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray | None:
        kept = self.loaded.descriptors
        if kept is None:
            return None
        ids = self._check_held(ids)
        return decoded(kept.vectors[kept.rows(ids)])

    def seen(self, ids: Sequence[int] | np.ndarray) -> np.ndarray | None:
        if self.loaded.seen is None:
            return None
        return in_sorted(self.loaded.seen, ids)

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored (exact, for a compressed index) vectors of scenes, in the order given."""
        ids = self._check_held(ids)
        full = self.loaded.full_vectors
        if full is not None:
            return np.asarray(full.vectors[full.rows(ids)], dtype=np.float32)
        return np.asarray(self.index.reconstruct_batch(ids), dtype=np.float32)

    def search(self, queries: np.ndarray, k: int, where: SceneFilter | None = None) -> SearchResult:
        """Top-k per query. Excluded ids are dropped from a deeper search (so every k up to
        MAX_K works, whatever is excluded). An allow-list of up to EXACT_ALLOWED scenes is
        searched exactly over their vectors; a longer one goes through the index, and an
        approximate index that finds fewer than k allowed scenes (an inverted file visits
        only some lists) is completed by exact search over the allowed scenes, so k hits
        come back whenever k allowed scenes exist. An allow-list given as an `IdMask` is
        searched over the index's vectors in place, without listing its ids
        (`index.masked_scan`) where the index keeps plain vectors: exactly when few, else in
        the probed lists, more of them where those hold fewer than k."""
        check_k(k)
        where = where or SceneFilter()
        unsupported = where.conditions() - self.native_filters
        if unsupported:
            raise ValueError(
                f"a FAISS index filters by ids only, not {', '.join(sorted(unsupported))}"
            )
        if isinstance(where.allow_ids, IdMask) and self.scan is not None:
            return self._search_mask(queries, k, where.allow_ids.excluding(where.exclude_ids))
        if where.allow_ids is None:
            excluded = list(where.exclude_ids)
            fetch = _excluded_fetch(k, excluded, self.count) if excluded else k
            result = self._search(queries, fetch, None)
            return _without_excluded(result, excluded, k) if excluded else result
        allowed = sorted_unique(np.asarray(where.allow_ids, dtype=np.int64))
        if len(where.exclude_ids):
            allowed = allowed[~np.isin(allowed, np.asarray(where.exclude_ids, dtype=np.int64))]
        if len(allowed) > EXACT_ALLOWED:
            result = self._search(queries, k, allowed)
            allowed = allowed[self.contains(allowed)]
            wanted = min(k, len(allowed))
            if (result.ids[:, :wanted] >= 0).all():
                return result
        else:
            allowed = allowed[self.contains(allowed)]
        exact = exact_search(self.vectors(allowed), allowed, queries, k)
        ids = np.full((len(exact.ids), k), -1, dtype=np.int64)
        scores = np.full((len(exact.ids), k), -np.inf, dtype=np.float32)
        ids[:, : exact.ids.shape[1]] = exact.ids
        scores[:, : exact.ids.shape[1]] = exact.scores
        return SearchResult(ids, scores)

    def _search_mask(self, queries: np.ndarray, k: int, allowed: IdMask) -> SearchResult:
        """`search` over the ids an `IdMask` allows: exactly when they are few, else in the
        lists FAISS would probe, more lists where those hold fewer than k
        (`MaskedScan.widened`)."""
        assert self.scan is not None
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.index.d:
            raise IndexSearchError(
                f"queries have {queries.shape[1]} dimensions, the index {self.index.d}"
            )
        if allowed.count > EXACT_ALLOWED:
            return self.scan.widened(queries, k, allowed, self.settings.nprobe)
        return self.scan.exact(queries, k, allowed)

    def _search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> SearchResult:
        return search(
            self.index if allowed is not None or self.unfiltered is None else self.unfiltered,
            queries,
            k,
            allow_ids=allowed,
            settings=self.settings,
            full_vectors=self.loaded.full_vectors,
        )


@dataclass
class FaissVersions:
    """The FAISS store: index versions under `root`."""

    root: Path
    search_settings: SearchSettings = field(default_factory=SearchSettings)
    use_gpus: bool = True
    """Copy each opened index onto all GPUs for unfiltered searches (with faiss-gpu)."""
    kind: str = "faiss"

    def __post_init__(self) -> None:
        self.versions = IndexStore(self.root)

    @property
    def location(self) -> str:
        return str(self.root)

    def current(self) -> StoreVersion | None:
        version = self.versions.current_version()
        if version is None:
            return None
        manifest = self.versions.manifest(version)  # IndexNotReadyError when damaged
        share = manifest.stats.get("seen_share")
        content = "" if share is None else f", {share:.0%} seen content"
        descriptors = (
            f"; descriptors kept ({manifest.descriptors_dtype or LEGACY_DESCRIPTORS})"
            if manifest.descriptors_checksum
            else ""
        )
        return StoreVersion(
            version,
            manifest.model_version,
            f"{version} ({manifest.factory}, {manifest.count} scenes, "
            f"model {manifest.model_version}{content}{descriptors})",
        )

    def describe_empty(self) -> str:
        return f"no index has been built under {self.root}"

    def ids(self, version: str) -> np.ndarray:
        return self.versions.ids(version)

    def open(self, version: str, model_version: str) -> Searcher:
        # mapped: the workers of one machine (`grn serve --workers N`) share the vectors
        loaded = self.versions.load(version, expected_model=model_version, mapped=True)
        unfiltered = None
        if self.use_gpus and can_use_gpu(loaded.index):
            unfiltered = to_gpus(loaded.index)
            log.info("index %s copied onto %d GPUs for unfiltered searches", version, gpu_count())
        return Searcher(loaded, self.search_settings, unfiltered)

    def reindex(
        self, model_path: str | Path, archive_dir: str | Path | Archive, options: ReindexOptions
    ) -> Any:
        """A new version (or, `incremental`, the current one updated) in service; every
        full build is a new version, so `replace` changes nothing here."""
        from index.stores.faiss_build import reindex

        return reindex(
            model_path,
            archive_dir,
            self.root,
            labels_csv=options.labels_csv,
            settings=options.build,
            incremental=options.incremental,
            device=options.device,
            skip_broken=options.skip_broken,
            progress=options.progress,
            names=options.names,
            ray_workers=options.ray_workers,
            ray_address=options.ray_address,
        )

    def command(self, action: ReindexAction) -> str:
        return "grn reindex --incremental" if action == "incremental" else "grn reindex"

    def check_writable(self) -> None:
        """A reindex in another process writes a new version beside the served one."""

    def reuse(self, model_version: str, ids: np.ndarray) -> bool:
        """The newest complete version of that model over those ids becomes current."""
        for candidate in reversed(self.versions.complete_versions()):
            manifest = self.versions.manifest(candidate)
            if manifest.model_version == model_version and np.array_equal(
                self.versions.ids(candidate), ids
            ):
                self.versions.activate(candidate)
                return True
        return False

    def init_worker_thread(self) -> None:
        """FAISS answers single queries; its OpenMP team, spinning after each search, took
        the cores from the model (a search by image cost 27 ms against 14 ms for its
        classify)."""
        faiss.omp_set_num_threads(1)

    def close(self) -> None:
        """Nothing is held open."""


def open_faiss(settings: StoreSettings) -> FaissVersions:
    return FaissVersions(
        Path(settings.index_root), settings.faiss.search(), use_gpus=settings.faiss.faiss_gpu
    )


@dataclass
class FaissCollection:
    """A FAISS index (any factory string) plus the metadata filters need, in memory.

    `copy` (`index.gpu.to_gpus` where faiss-gpu has GPUs) makes a copy of the index that
    answers unfiltered searches; as GPU and sharded indexes ignore id selectors, filtered
    searches stay on the CPU index. The copy is remade after the index changes."""

    model_version: str
    dim: int
    factory: str = "Flat"
    metas: dict[int, SceneMeta] = field(default_factory=dict)
    copy: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        self.index = make_index(self.factory, self.dim)
        if not self.index.is_trained:
            raise ValueError("FaissCollection builds untrained factories only (Flat, HNSW...)")
        self._copy: Any = None

    def add(self, ids: np.ndarray, vectors: np.ndarray, metas: Sequence[SceneMeta]) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        self.metas.update(zip(ids.tolist(), metas, strict=True))
        self._copy = None

    def remove(self, ids: np.ndarray) -> int:
        ids = np.asarray(ids, dtype=np.int64)
        removed = int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))
        self._copy = None
        for scene_id in ids.tolist():
            self.metas.pop(scene_id, None)
        return removed

    def search(self, queries: np.ndarray, k: int, where: SceneFilter | None = None) -> SearchResult:
        check_k(k)
        if where is None and self.copy is not None:
            if self._copy is None:
                self._copy = self.copy(self.index)
            return search(self._copy, queries, k)
        allowed = None
        if where is not None:
            allowed = np.asarray(
                [i for i, meta in self.metas.items() if where.passes(i, meta)], dtype=np.int64
            )
        return search(self.index, queries, k, allow_ids=allowed)

    def count(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        return np.sort(np.fromiter(self.metas, dtype=np.int64, count=len(self.metas)))
