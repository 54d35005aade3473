"""Rows per scene (vectors, probabilities, descriptors) that stay in files while an index
version is built from them, so that a reindex's memory does not grow with the archive.

The embedding job writes its shards' rows into one `.npy` file per matrix (`RowsWriter`,
plain writes: the pages go to the kernel's cache, not to the process); the build then reads
them through `GatheredRows`, which also joins them to other rows (an archive's carried
vectors, a parent version's) and puts them in id order without reading any: only a chunk at a
time is ever in memory, when it is added to the index or written to the new version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

CHUNK_ROWS = 16_384
"""Rows read or written at a time (40 MiB of 1,280-wide float16 descriptors)."""


class RowReader(Protocol):
    """Rows read on demand: `index.vectors.VectorFile`, `GatheredRows`."""

    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    def __len__(self) -> int: ...
    def __getitem__(self, key: Any) -> np.ndarray: ...
    def read_rows(self, rows: np.ndarray) -> np.ndarray: ...


Rows = np.ndarray | RowReader
"""A matrix of rows per scene: in memory, or read on demand."""


def _read(source: Rows, rows: np.ndarray) -> np.ndarray:
    if isinstance(source, np.ndarray):
        return source[rows]
    return source.read_rows(rows)


class GatheredRows:
    """A matrix whose row i is row `row_of[i]` of `sources[source_of[i]]` (arrays, or files
    read on demand), as `dtype`: reordering, joining and converting it reads nothing; indexing
    it reads the rows asked for, each source's in one `read_rows`, through `convert` when
    given (a coding that depends on the source's dtype: `index.descriptors.encoded`)."""

    def __init__(
        self,
        sources: Sequence[Rows],
        source_of: np.ndarray,
        row_of: np.ndarray,
        dtype: Any = None,
        convert: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        if not sources:
            raise ValueError("rows need at least one source")
        widths = {source.shape[1] for source in sources}
        if len(widths) != 1:
            raise ValueError(f"the sources' rows differ in width: {sorted(widths)}")
        self.sources = list(sources)
        self.source_of = np.asarray(source_of, np.int32)
        self.row_of = np.asarray(row_of, np.int64)
        self.dtype: np.dtype[Any] = np.dtype(dtype if dtype is not None else sources[0].dtype)
        self.shape: tuple[int, int] = (len(self.row_of), widths.pop())
        self.convert = convert

    @classmethod
    def of(cls, source: Rows) -> GatheredRows:
        """All the rows of `source`, in its order."""
        if isinstance(source, GatheredRows):
            return source
        return cls([source], np.zeros(len(source), np.int32), np.arange(len(source)))

    @classmethod
    def joined(
        cls,
        parts: Sequence[Rows],
        dtype: Any = None,
        convert: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> GatheredRows:
        """The rows of `parts`, one after the other."""
        gathered = [cls.of(part) for part in parts]
        sources: list[Rows] = []
        source_of = []
        for part in gathered:
            source_of.append(part.source_of + len(sources))
            sources.extend(part.sources)
        return cls(
            sources,
            np.concatenate(source_of),
            np.concatenate([part.row_of for part in gathered]),
            dtype if dtype is not None else gathered[0].dtype,
            convert,
        )

    def taken(self, order: np.ndarray) -> GatheredRows:
        """Rows `order` of these, in that order (nothing read)."""
        return GatheredRows(
            self.sources, self.source_of[order], self.row_of[order], self.dtype, self.convert
        )

    def astype(self, dtype: Any) -> GatheredRows:
        return GatheredRows(self.sources, self.source_of, self.row_of, dtype, self.convert)

    def __len__(self) -> int:
        return self.shape[0]

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64).reshape(-1)
        out = np.empty((len(rows), self.shape[1]), self.dtype)
        which, at = self.source_of[rows], self.row_of[rows]
        for number, source in enumerate(self.sources):
            mine = which == number
            if mine.any():
                part = _read(source, at if mine.all() else at[mine])
                out[mine] = part if self.convert is None else self.convert(part)
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            return self.read_rows(np.arange(*key.indices(len(self))))
        key = np.asarray(key)
        if key.dtype == np.bool_:
            return self.read_rows(np.flatnonzero(key))
        if key.ndim == 0:
            return self.read_rows(key.reshape(1))[0]
        return self.read_rows(key)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self.read_rows(np.arange(len(self)))
        return whole if dtype is None else whole.astype(dtype)


def chunks(rows: Rows, dtype: Any, size: int = CHUNK_ROWS) -> Iterable[np.ndarray]:
    """The rows as `dtype`, `size` at a time, in order."""
    for start in range(0, len(rows), size):
        yield np.ascontiguousarray(rows[start : start + size], dtype=dtype)


def _write_header(handle: IO[bytes], count: int, width: int, dtype: Any) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": (count, width)}  # fmt: skip
    np.lib.format.write_array_header_1_0(handle, header)


def save_rows(handle: IO[bytes], rows: Rows, dtype: Any) -> None:
    """Write `rows` as an `.npy` matrix of `dtype`, a chunk at a time."""
    _write_header(handle, len(rows), rows.shape[1], dtype)
    for chunk in chunks(rows, dtype):
        handle.write(chunk.data)


class RowsWriter:
    """An `.npy` matrix of `count` rows written a block at a time (`add`); `close` checks
    that every row came."""

    def __init__(self, path: Path, count: int, width: int, dtype: Any) -> None:
        self.path, self.count, self.dtype, self.written = path, count, np.dtype(dtype), 0
        self.width = width
        self._handle = path.open("wb")
        _write_header(self._handle, count, width, self.dtype)

    def add(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"{self.path.name}: rows of width {self.width} expected")
        if self.written + len(rows) > self.count:
            raise ValueError(f"{self.path.name}: more than the {self.count} rows announced")
        self._handle.write(rows.data)
        self.written += len(rows)

    def close(self) -> None:
        self._handle.close()
        if self.written != self.count:
            raise ValueError(f"{self.path.name}: {self.written} of {self.count} rows written")


def add_in_chunks(index: Any, ids: np.ndarray, rows: Rows) -> None:
    """`index.add_with_ids` of `rows` (float32), a chunk at a time."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    for start, chunk in zip(range(0, len(ids), CHUNK_ROWS), chunks(rows, np.float32), strict=True):
        index.add_with_ids(chunk, ids[start : start + CHUNK_ROWS])
