"""Filtered search over an `IdMask`, reading a FAISS index's vectors in place.

FAISS filters an inverted file with an `IDSelector` asked about every entry of the lists it
probes. Scene ids are SQL's keys (hashes at archive scale), so the one cheap selector, a
bitmap, does not apply; `IDSelectorBatch` is a hash set built from the allowed ids on every
search: about a second for 500,000 ids at a million scenes on this machine. Here instead the
index's entries are mapped once to the rows of the catalog's sorted ids (`entry_rows`, once
per catalog generation), and a filter is the catalog's boolean mask over those rows: an
entry passes when `mask[entry_rows[entry]]`.

The vectors are read where FAISS keeps them. A memory-mapped inverted file (the service maps
its versions) holds every list's codes in one mapping, each list's codes followed by its
ids, so each entry's vector is at a known byte offset of one span; a flat index keeps one
matrix. An index kept in separate allocations (read into memory, not mapped) is copied once
into one matrix. Only uncompressed codes are read (`Flat`, `IVF...,Flat`); other kinds
return no scan and are searched with FAISS's selectors.

- `exact`: brute force over every allowed entry (a small selection: gathering its vectors
  costs less than probing lists that hold few of them).
- `probed`: the lists FAISS would probe (the quantizer's `nprobe` nearest), their allowed
  entries scored exactly: FAISS's own filtered IVF search, without the selector.
- `widened`: `probed`, probing WIDEN times as many lists while those probed hold fewer than k
  allowed entries (a query far from every allowed scene), up to every list.
"""

from __future__ import annotations

import ctypes
import logging
import threading

import faiss
import numpy as np

from index.id_mask import IdMask
from index.results import SearchResult
from index.vectors import find_ivf

log = logging.getLogger("grn.index")

WIDEN = 4
"""How many times more lists `widened` probes each time the lists probed hold fewer than k
allowed entries. Completing such a page by exact search over every allowed entry instead
gathered and scored 500,000 vectors for one query under a 50% filter at a million scenes
(docs/scaling.md, "What remains")."""


def _address(pointer: object, count: int) -> int:
    """The address a SWIG pointer of FAISS holds (to `count` bytes)."""
    return int(faiss.rev_swig_ptr(pointer, max(count, 1)).ctypes.data)


class MaskedScan:
    """The entries of one (never modified) FAISS index in storage order, with each entry's
    vector readable by its position, for searches restricted by an `IdMask`."""

    def __init__(self, index: faiss.Index) -> None:
        self.index = index  # keeps the memory the views read alive
        ivf = find_ivf(index)
        if ivf is not None:
            self._read_ivf(ivf)
        else:
            self._read_flat(index)
        self._entries = len(self.entry_ids)
        self._lock = threading.Lock()
        self._universe: np.ndarray | None = None
        self._rows: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64),) * 2

    @classmethod
    def of(cls, index: faiss.Index) -> MaskedScan | None:
        """A scan of `index` when its codes are plain float32 vectors (Flat, IVF-Flat, an
        id map over a flat index); None for other kinds."""
        inner = faiss.downcast_index(index)
        if isinstance(inner, faiss.IndexIVFFlat):
            return cls(index)
        if isinstance(inner, faiss.IndexIDMap | faiss.IndexIDMap2) and isinstance(
            faiss.downcast_index(inner.index), faiss.IndexFlat
        ):
            return cls(index)
        return None

    def _read_flat(self, index: faiss.Index) -> None:
        inner = faiss.downcast_index(index)
        flat = faiss.downcast_index(inner.index)
        n, d = int(flat.ntotal), int(flat.d)
        self.entry_ids = faiss.vector_to_array(inner.id_map).astype(np.int64)
        self.list_starts = np.asarray([0, n], dtype=np.int64)
        self.quantizer = None
        self.nlist = 1
        vectors = faiss.rev_swig_ptr(flat.get_xb(), max(n * d, 1))[: n * d].reshape(n, d)
        self._matrix: np.ndarray | None = vectors
        self._span = np.zeros(0, np.uint8)
        self._offsets = np.zeros(0, np.int64)
        self.dim = d

    def _read_ivf(self, ivf: faiss.IndexIVF) -> None:
        lists, code_size = ivf.invlists, int(ivf.code_size)
        self.dim, self.nlist, self.quantizer = int(ivf.d), int(ivf.nlist), ivf.quantizer
        sizes = np.asarray([lists.list_size(i) for i in range(self.nlist)], dtype=np.int64)
        codes = np.asarray(
            [_address(lists.get_codes(i), int(s) * code_size) if s else 0
             for i, s in enumerate(sizes)], dtype=np.int64,
        )  # fmt: skip
        id_parts = [
            faiss.rev_swig_ptr(lists.get_ids(i), int(s)).copy() if s else np.zeros(0, np.int64)
            for i, s in enumerate(sizes)
        ]
        self.entry_ids = np.concatenate(id_parts).astype(np.int64)
        self.list_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        used = sizes > 0
        starts, counts = codes[used], sizes[used]
        ids_at = starts + counts * code_size
        # one span when the lists lie as in the file: codes, then ids, list after list
        one_span = bool(len(starts)) and bool(np.all(starts[1:] == ids_at[:-1] + counts[:-1] * 8))
        if one_span:
            base = int(starts[0])
            length = int(ids_at[-1] + counts[-1] * 8) - base
            memory = (ctypes.c_uint8 * length).from_address(base)
            self._span = np.frombuffer(memoryview(memory).cast("B"), np.uint8)
            row_offsets = [
                codes[i] - base + code_size * np.arange(s, dtype=np.int64)
                for i, s in enumerate(sizes)
                if s
            ]
            self._offsets = np.concatenate(row_offsets) if row_offsets else np.zeros(0, np.int64)
            self._matrix = None
        else:
            log.info("inverted lists not in one mapping: their vectors are copied once")
            parts = [
                faiss.rev_swig_ptr(lists.get_codes(i), int(s) * code_size).view(np.float32)
                for i, s in enumerate(sizes)
                if s
            ]
            flat = np.concatenate(parts) if parts else np.zeros(0, np.float32)
            self._matrix = flat.reshape(-1, self.dim)
            self._span = np.zeros(0, np.uint8)
            self._offsets = np.zeros(0, np.int64)

    def vectors(self, entries: np.ndarray) -> np.ndarray:
        """The float32 vectors of the entries at these positions (storage order)."""
        if self._matrix is not None:
            return np.asarray(self._matrix[entries], dtype=np.float32)
        size = self.dim * 4
        window = np.lib.stride_tricks.as_strided(
            self._span, shape=(max(len(self._span) - size + 1, 0), size), strides=(1, 1),
            writeable=False,
        )  # fmt: skip
        return window[self._offsets[entries]].view(np.float32)

    def rows(self, universe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For a sorted universe of ids: each entry's row in it (len(universe) where it has
        none), and each row's entry (-1 where the index holds none). Kept for the last
        universe (one catalog generation)."""
        with self._lock:
            if self._universe is universe:
                return self._rows
            n = len(universe)
            at = np.searchsorted(universe, self.entry_ids) if n else np.zeros(0, np.int64)
            at = np.minimum(at, max(n - 1, 0))
            held = (universe[at] == self.entry_ids) if n else np.zeros(self._entries, bool)
            entry_rows = np.where(held, at, n)
            row_entries = np.full(n, -1, dtype=np.int64)
            row_entries[entry_rows[held]] = np.flatnonzero(held)
            self._universe, self._rows = universe, (entry_rows, row_entries)
            return self._rows

    def exact(self, queries: np.ndarray, k: int, allowed: IdMask) -> SearchResult:
        """The k best allowed entries of each query, by brute force over them all."""
        _, row_entries = self.rows(allowed.universe)
        entries = row_entries[np.flatnonzero(allowed.mask)]
        entries = np.sort(entries[entries >= 0])  # storage order: the reads go forward
        scores = queries @ self.vectors(entries).T
        return _best(scores, np.broadcast_to(self.entry_ids[entries], scores.shape), k)

    def probed(self, queries: np.ndarray, k: int, allowed: IdMask, nprobe: int) -> SearchResult:
        """The k best allowed entries of each query among the `nprobe` lists nearest it (all
        entries of a flat index), as FAISS's IVF search with a selector finds them."""
        entry_rows, _ = self.rows(allowed.universe)
        passes = np.append(allowed.mask, False)  # the last: entries outside the universe
        if self.quantizer is None:
            probes = np.zeros((len(queries), 1), dtype=np.int64)
        else:
            _, probes = self.quantizer.search(queries, min(nprobe, self.nlist))
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for q, lists in enumerate(probes):
            lists = lists[lists >= 0]
            first, last = self.list_starts[lists], self.list_starts[lists + 1]
            sizes = last - first
            entries = np.repeat(first - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
            entries = np.sort(entries[passes[entry_rows[entries]]])
            found = _best(
                self.vectors(entries) @ queries[q][:, None], self.entry_ids[entries][:, None], k,
                along=0,
            )  # fmt: skip
            width = found.ids.shape[1]
            ids[q, :width], scores[q, :width] = found.ids[0], found.scores[0]
        return SearchResult(ids, scores)

    def widened(self, queries: np.ndarray, k: int, allowed: IdMask, nprobe: int) -> SearchResult:
        """`probed`, probing WIDEN times as many lists until each query has k allowed entries
        or every list is probed (then every allowed entry was scored: brute force's page)."""
        while True:
            result = self.probed(queries, k, allowed, nprobe)
            if nprobe >= self.nlist or (result.ids >= 0).all():
                return result
            nprobe *= WIDEN


def _best(scores: np.ndarray, ids: np.ndarray, k: int, along: int = 1) -> SearchResult:
    """The k best-scored ids of each row (`along=0`: of the one column), best first, padded
    with -1 to k."""
    if along == 0:
        scores, ids = scores.T, ids.T
    rows, count = scores.shape
    take = min(k, count)
    out_ids = np.full((rows, k), -1, dtype=np.int64)
    out_scores = np.full((rows, k), -np.inf, dtype=np.float32)
    if take:
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take] if count > take else None
        chosen = np.arange(count)[None].repeat(rows, 0) if top is None else top
        picked = np.take_along_axis(scores, chosen, axis=1)
        order = np.argsort(-picked, axis=1, kind="stable")
        out_scores[:, :take] = np.take_along_axis(picked, order, axis=1)
        out_ids[:, :take] = np.take_along_axis(np.take_along_axis(ids, chosen, 1), order, 1)
    return SearchResult(out_ids, out_scores)
