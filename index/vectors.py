"""FAISS indexes over scene embeddings: choosing, building, searching and editing them.

Vectors are unit-norm embeddings compared by inner product (cosine similarity). FAISS ids
are the scene ids, added with `add_with_ids`, so results need no side table. Factory strings
follow FAISS's index factory: `Flat`, `IVF4096,Flat`, `IVF4096,PQ32`, `HNSW32`, ...; index
types that cannot take ids themselves (Flat, HNSW, ...) are wrapped in `IDMap2`.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from index.results import MAX_FETCH, IndexSearchError, SearchResult, check_k, exact_search
from index.results import recall_at_k as recall_at_k  # re-exported: the indexes' yardstick
from index.row_files import GatheredRows, Rows, add_in_chunks

BYTES_PER_FLOAT = 4


def _pow2(value: float, low: int, high: int) -> int:
    return int(min(high, max(low, 2 ** round(math.log2(max(value, 1))))))


def auto_factory(count: int, dim: int, memory_budget_bytes: int) -> str:
    """The index type `auto` picks for `count` vectors of `dim` within a memory budget.

    Like autofaiss: exact search while it is cheap (up to 20,000 vectors); an inverted file
    with about 4 sqrt(n) lists over full vectors while they fit in three quarters of the
    budget (the rest is for the process and the queries); product quantisation (dim / 4
    bytes a vector) beyond that.
    """
    if count <= 20_000:
        return "Flat"
    nlist = _pow2(4 * math.sqrt(count), 64, 65_536)
    raw = count * dim * BYTES_PER_FLOAT
    if raw <= memory_budget_bytes * 3 // 4:
        return f"IVF{nlist},Flat"
    return f"IVF{nlist},PQ{max(8, dim // 4)}"


def make_index(factory: str, dim: int) -> faiss.Index:
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(f"FAISS cannot build the factory string {factory!r}: {exc}") from exc
    if not _takes_ids(index):
        index = faiss.IndexIDMap2(index)
    return index


def _takes_ids(index: faiss.Index) -> bool:
    return isinstance(faiss.downcast_index(index), faiss.IndexIVF)


def training_sample_size(index: faiss.Index) -> int:
    ivf = find_ivf(index)
    if ivf is None:
        return 65_536
    return max(50_000, ivf.nlist * 39)


def find_ivf(index: faiss.Index) -> faiss.IndexIVF | None:
    inner = faiss.downcast_index(index)
    while True:
        if isinstance(inner, faiss.IndexIVF):
            return inner
        if not isinstance(inner, faiss.IndexIDMap | faiss.IndexIDMap2):
            return None
        inner = faiss.downcast_index(inner.index)


def find_hnsw(index: faiss.Index) -> faiss.IndexHNSW | None:
    inner = faiss.downcast_index(index)
    while isinstance(inner, faiss.IndexIDMap | faiss.IndexIDMap2):
        inner = faiss.downcast_index(inner.index)
    return inner if isinstance(inner, faiss.IndexHNSW) else None


def is_lossy(index: faiss.Index) -> bool:
    """Whether the index stores compressed codes (PQ, SQ, ...) rather than the vectors."""
    inner = faiss.downcast_index(index)
    while isinstance(inner, faiss.IndexIDMap | faiss.IndexIDMap2):
        inner = faiss.downcast_index(inner.index)
    return not isinstance(inner, faiss.IndexFlat | faiss.IndexIVFFlat | faiss.IndexHNSWFlat)


def build_index(
    factory: str,
    ids: np.ndarray,
    vectors: Rows,
    *,
    seed: int = 0,
) -> faiss.Index:
    """Build, train (on a sample) and fill an index, reading `vectors` a chunk at a time."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError("scene ids must be unique")
    index = make_index(factory, vectors.shape[1])
    if not index.is_trained:
        sample = training_sample_size(index)
        rng = np.random.default_rng(seed)
        picks = slice(None) if len(ids) <= sample else rng.choice(len(ids), sample, replace=False)
        train = np.ascontiguousarray(vectors[picks], dtype=np.float32)
        ivf = find_ivf(index)
        if ivf is not None and len(train) < ivf.nlist:
            raise ValueError(
                f"{factory} needs at least {ivf.nlist} vectors to train, got {len(train)}; "
                "use Flat or fewer lists"
            )
        index.train(train)
    add_in_chunks(index, ids, vectors)
    return index


@dataclass(frozen=True)
class SearchSettings:
    nprobe: int = 64
    """IVF lists visited per query."""
    ef_search: int = 128
    """HNSW candidate list length."""
    rerank_factor: int = 10
    """With full vectors beside a compressed (PQ) index: candidates re-scored per result."""


class VectorFile:
    """The rows of a float32 (or float16, or int8) `.npy` matrix, read on demand with `pread`.

    A memory map would do the same reads, but every page a query touches (and the pages
    the kernel reads ahead around it) then counts as the process's resident memory: at 10M
    vectors re-ranking grew a service's RSS by the whole 4.9 GB file. Rows read with `pread`
    pass through the page cache, which the kernel shares and reclaims, and the process holds
    only the rows of the query at hand. Safe to use from several threads.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        with open(self.path, "rb") as handle:
            major, _ = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if major == 1
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran_order, dtype = read_header(handle)
            self._offset = handle.tell()
        if len(shape) != 2 or fortran_order or dtype not in (np.float32, np.float16, np.int8):
            raise ValueError(f"{self.path}: not a C-ordered float32, float16 or int8 matrix")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self._row_bytes = self.shape[1] * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)

    def __len__(self) -> int:
        return self.shape[0]

    def _read_into(self, target: memoryview, offset: int) -> None:
        done = 0
        while done < len(target):  # one read returns at most about 2 GiB
            got = os.preadv(self._fd, [target[done : done + (1 << 30)]], offset + done)
            if got == 0:
                raise OSError(f"{self.path}: file ended early (truncated?)")
            done += got

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """The given rows, in the order given. Scattered rows (re-ranking candidates) are
        read one by one straight into the result, in file order; long runs of consecutive
        rows (a whole file, a mask) in one read each."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise IndexError(f"row out of range 0..{self.shape[0] - 1}")
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        if not len(rows):
            return out
        row_bytes = self._row_bytes
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        if len(breaks) + 1 > len(rows) // 4:
            view = out.data.cast("B")
            for position, row in zip(order.tolist(), sorted_rows.tolist(), strict=True):
                start = position * row_bytes
                self._read_into(view[start : start + row_bytes], self._offset + row * row_bytes)
            return out
        for run in np.split(np.arange(len(rows)), breaks):
            first, count = int(sorted_rows[run[0]]), len(run)
            block = np.empty((count, self.shape[1]), dtype=self.dtype)
            self._read_into(block.data.cast("B"), self._offset + first * row_bytes)
            out[order[run]] = block[sorted_rows[run] - first]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, int | np.integer):
            return self.read_rows(np.asarray([key % self.shape[0] if key < 0 else key]))[0]
        if isinstance(key, slice):
            return self.read_rows(np.arange(*key.indices(self.shape[0])))
        key = np.asarray(key)
        if key.dtype == np.bool_:
            if key.shape != (self.shape[0],):
                raise IndexError(f"a boolean mask must have {self.shape[0]} entries")
            return self.read_rows(np.flatnonzero(key))
        if np.issubdtype(key.dtype, np.integer):
            return self.read_rows(np.where(key < 0, key + self.shape[0], key))
        raise TypeError(f"cannot index a VectorFile with {key.dtype} values")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self.read_rows(np.arange(self.shape[0]))
        return whole if dtype is None else whole.astype(dtype)


@dataclass(frozen=True)
class FullVectors:
    """Rows kept per scene id, sorted by id (a `VectorFile` when loaded from an index
    version): the uncompressed vectors of an index, used to re-rank the candidates of a
    product-quantised index exactly, or the scenes' label probabilities."""

    ids: np.ndarray
    vectors: np.ndarray | VectorFile | GatheredRows

    @classmethod
    def from_unsorted(
        cls, ids: np.ndarray, vectors: np.ndarray, dtype: Any = np.float32
    ) -> FullVectors:
        ids = np.asarray(ids)
        if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])):  # sorted already: no copy
            return cls(ids, np.asarray(vectors, dtype=dtype))
        order = np.argsort(ids, kind="stable")
        return cls(ids[order], np.asarray(vectors, dtype=dtype)[order])

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self.vectors.dtype)

    def rows(self, wanted: np.ndarray) -> np.ndarray:
        rows = np.searchsorted(self.ids, wanted)
        rows = np.clip(rows, 0, max(len(self.ids) - 1, 0))
        if len(self.ids) == 0 or not np.array_equal(self.ids[rows], wanted):
            raise ValueError("the full vectors do not hold every id of the index")
        return rows

    def rerank(self, queries: np.ndarray, candidates: SearchResult, k: int) -> SearchResult:
        """Exact scores for each query's candidates, best k first."""
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for q, (row_ids, query) in enumerate(zip(candidates.ids, queries, strict=True)):
            valid = row_ids[row_ids >= 0]
            if not len(valid):
                continue
            rows = self.rows(valid)
            exact = np.asarray(self.vectors[rows]) @ query
            best = np.argsort(-exact, kind="stable")[:k]
            ids[q, : len(best)] = valid[best]
            scores[q, : len(best)] = exact[best]
        return SearchResult(ids, scores)


def configure(index: faiss.Index, settings: SearchSettings) -> None:
    ivf = find_ivf(index)
    if ivf is not None:
        ivf.nprobe = min(settings.nprobe, ivf.nlist)
    hnsw = find_hnsw(index)
    if hnsw is not None:
        hnsw.hnsw.efSearch = settings.ef_search


def _search_parameters(
    index: faiss.Index, settings: SearchSettings, selector: faiss.IDSelector | None
) -> faiss.SearchParameters | None:
    if selector is None:
        return None
    if find_ivf(index) is not None:
        return faiss.SearchParametersIVF(sel=selector, nprobe=settings.nprobe)
    if find_hnsw(index) is not None:
        return faiss.SearchParametersHNSW(sel=selector, efSearch=settings.ef_search)
    return faiss.SearchParameters(sel=selector)


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    *,
    allow_ids: Sequence[int] | np.ndarray | None = None,
    settings: SearchSettings | None = None,
    full_vectors: FullVectors | None = None,
) -> SearchResult:
    """Top-k (id, score) per query, best first; `allow_ids` restricts the candidates. With
    `full_vectors`, `rerank_factor` x k candidates are re-scored exactly."""
    check_k(k, MAX_FETCH)
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.shape[1] != index.d:
        raise IndexSearchError(f"queries have {queries.shape[1]} dimensions, the index {index.d}")
    settings = settings or SearchSettings()
    configure(index, settings)
    selector = None
    if allow_ids is not None:
        allowed = np.ascontiguousarray(np.asarray(allow_ids, dtype=np.int64))
        if allowed.size and find_hnsw(index) is not None:
            # HNSW behind an id map does not honour id selectors: answer exactly over the
            # stored vectors of the allowed scenes that the index holds.
            allowed = allowed[contained_ids(index, allowed)]
            if allowed.size:
                found = exact_search(index.reconstruct_batch(allowed), allowed, queries, k)
                return _padded(found, k)
        if allowed.size == 0:
            empty = np.full((len(queries), k), -1, dtype=np.int64)
            return SearchResult(empty, np.full((len(queries), k), -np.inf, dtype=np.float32))
        # Other indexes apply the selector themselves: listing the index's ids here would
        # cost a pass over every id on each query.
        selector = faiss.IDSelectorBatch(allowed)
    params = _search_parameters(index, settings, selector)
    fetch = k * settings.rerank_factor if full_vectors is not None else k
    scores, ids = index.search(queries, fetch, params=params)
    scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
    result = SearchResult(ids.astype(np.int64), scores)
    return full_vectors.rerank(queries, result, k) if full_vectors is not None else result


def _padded(result: SearchResult, k: int) -> SearchResult:
    """Widen a result with fewer than k columns with id -1 and score -inf."""
    missing = k - result.ids.shape[1]
    if missing <= 0:
        return result
    rows = result.ids.shape[0]
    return SearchResult(
        np.hstack([result.ids, np.full((rows, missing), -1, dtype=np.int64)]),
        np.hstack([result.scores, np.full((rows, missing), -np.inf, dtype=np.float32)]),
    )


def add_vectors(index: faiss.Index, ids: np.ndarray, vectors: Rows) -> None:
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    present = contained_ids(index, ids)
    if present.any():
        raise ValueError(f"ids already in the index: {ids[present][:10].tolist()}")
    add_in_chunks(index, ids, vectors)


def remove_vectors(index: faiss.Index, ids: np.ndarray) -> int:
    """Remove ids; returns how many were removed. HNSW graphs cannot remove: rebuild them."""
    if find_hnsw(index) is not None:
        raise ValueError("HNSW indexes cannot remove vectors; run a full reindex instead")
    return int(index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))))


def stored_ids(index: faiss.Index) -> np.ndarray:
    """Every id in the index."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexIDMap | faiss.IndexIDMap2):
        return faiss.vector_to_array(inner.id_map).astype(np.int64)
    ivf = find_ivf(index)
    if ivf is None:
        raise ValueError("cannot list the ids of this index type")
    invlists = ivf.invlists
    parts = []
    for lst in range(ivf.nlist):
        size = invlists.list_size(lst)
        if size:
            parts.append(faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy())
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def contained_ids(index: faiss.Index, ids: np.ndarray) -> np.ndarray:
    return np.isin(ids, stored_ids(index)) if index.ntotal else np.zeros(len(ids), dtype=bool)
