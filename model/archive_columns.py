"""An archive's listing as columns: a few arrays for all its scenes rather than an object a
scene, so that a million-scene archive (`grn reindex --archive` of a `grn synth` archive)
costs a few hundred bytes a scene to hold, not the 2.2 KB of an `ArchiveEntry` with its
strings, `Path`, labels tuple and shapely footprint (docs/scaling.md, "Reindex memory").

`SceneColumns` is a sequence of `ArchiveEntry`, each made when asked for, so code that reads
scenes one at a time is unchanged; what reads every scene's name or folder (the reindex's
ids, its shard folder, the seen-content check) asks the columns (`names_of`, `folders_of`)
and makes no entry. Names and paths are UTF-8 end to end in one buffer, footprints WKB the
same way, folders and splits small codes, labels a uint8 matrix, times int64 microseconds.
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, overload

import numpy as np
import shapely

from model.geo import GEO_COLUMNS, SceneGeo

SPLITS = ("train", "val", "test")
NO_TIME = int(np.iinfo(np.int64).min)
"""`acquired` of a scene whose archive does not say when."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class ArchiveEntry:
    """One scene of an archive: a row of labels.csv and its image file."""

    name: str
    """The image stem."""
    folder: str
    """The `scene` column: the scene folder (class) it belongs to."""
    split: str
    labels: tuple[int, ...]
    """One 0/1 value per label column; empty when the scene is not labelled."""
    path: Path
    geo: SceneGeo | None = None
    """Where the scene lies, when the archive says (or its GeoTIFF does)."""
    acquired: datetime | None = None
    """When the pixels were taken (UTC), when the archive says."""

    @property
    def labelled(self) -> bool:
        """Whether the scene's labels are known (an all-zero row is labelled)."""
        return bool(self.labels)


class BytesColumn:
    """Byte strings end to end in one buffer, with where each ends: 8 bytes a value beside
    its bytes, where a list of `str` or `bytes` costs some 60 more."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._ends = array("q")

    def add(self, value: bytes) -> None:
        self._data += value
        self._ends.append(len(self._data))

    def __len__(self) -> int:
        return len(self._ends)

    def raw(self, i: int) -> bytes:
        start = self._ends[i - 1] if i else 0
        return bytes(self._data[start : self._ends[i]])

    def text(self, i: int) -> str:
        return self.raw(i).decode()

    def texts(self, positions: Sequence[int] | np.ndarray | None = None) -> list[str]:
        """The values at `positions` (all by default) as `str`, without copying the buffer."""
        view, ends = memoryview(self._data), self._ends
        if positions is None:
            starts = [0, *ends[:-1]]
            return [str(view[a:b], "utf-8") for a, b in zip(starts, ends, strict=True)]
        return [str(view[ends[i - 1] if i else 0 : ends[i]], "utf-8") for i in positions]


class SceneColumns(Sequence[ArchiveEntry]):
    """The scenes of an archive as columns (see the module docstring); built by
    `ListingBuilder`."""

    def __init__(self, builder: ListingBuilder) -> None:
        count = len(builder.names)
        self.images_folder = builder.images_folder
        """The folder each scene's `paths` value is relative to."""
        self.names, self.paths = builder.names, builder.paths
        self.folder_names = list(builder.folder_codes)
        self.folder_codes = np.frombuffer(builder.folders, np.int32)
        self.split_codes = np.frombuffer(builder.splits, np.int8)
        self.labels = np.frombuffer(builder.labels, np.uint8).reshape(count, builder.label_count)
        self.labelled = np.frombuffer(builder.labelled, np.bool_)
        self.geo = builder.geo
        self.acquired = np.frombuffer(builder.acquired, np.int64) if builder.times else None

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, i: int) -> ArchiveEntry: ...
    @overload
    def __getitem__(self, i: slice) -> list[ArchiveEntry]: ...

    def __getitem__(self, i: int | slice) -> ArchiveEntry | list[ArchiveEntry]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = operator.index(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("scene index out of range")
        time = NO_TIME if self.acquired is None else int(self.acquired[i])
        return ArchiveEntry(
            name=self.names.text(i),
            folder=self.folder_names[self.folder_codes[i]],
            split=SPLITS[self.split_codes[i]],
            labels=tuple(self.labels[i].tolist()) if self.labelled[i] else (),
            path=self.images_folder / self.paths.text(i),
            geo=self.geo.at(i) if self.geo is not None else None,
            acquired=None if time == NO_TIME else EPOCH + time * MICROSECOND,
        )

    def __iter__(self) -> Iterator[ArchiveEntry]:
        for i in range(len(self)):
            yield self[i]

    def names_of(self, positions: Sequence[int] | None = None) -> list[str]:
        return self.names.texts(positions)

    def folders_of(self, positions: Sequence[int] | None = None) -> list[str]:
        codes = self.folder_codes if positions is None else self.folder_codes[list(positions)]
        return [self.folder_names[code] for code in codes.tolist()]

    def positions(self, split: str | None, labelled_only: bool) -> list[int]:
        """Positions of the scenes of `split` (every split when None), labelled only or all."""
        keep = np.ones(len(self), bool)
        if split is not None:
            keep &= self.split_codes == SPLITS.index(split)
        if labelled_only:
            keep &= self.labelled
        return np.flatnonzero(keep).tolist()


class GeoColumns:
    """The scenes' `SceneGeo`s: footprints as WKB (empty: the scene has none); CRS and
    source raster as text (empty: None) and windows as four int64 each, when the archive
    has those columns (a `grn synth` archive gives footprints alone)."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.footprints = BytesColumn()
        self.crs = BytesColumn() if "crs" in columns else None
        self.sources = BytesColumn() if "source" in columns else None
        self.windows = array("q") if "window" in columns else None
        self.windowed = bytearray()

    def add(self, geo: SceneGeo | None) -> None:
        self.footprints.add(b"" if geo is None else geo.footprint.wkb)
        if self.crs is not None:
            self.crs.add(((geo and geo.crs) or "").encode())
        if self.sources is not None:
            self.sources.add(((geo and geo.source) or "").encode())
        if self.windows is not None:
            window = geo.window if geo is not None else None
            self.windows.extend(window or (0, 0, 0, 0))
            self.windowed.append(window is not None)

    def at(self, i: int) -> SceneGeo | None:
        wkb = self.footprints.raw(i)
        if not wkb:
            return None
        window: Any = None
        if self.windows is not None and self.windowed[i]:
            window = tuple(self.windows[4 * i : 4 * i + 4])
        crs = self.crs.text(i) if self.crs is not None else ""
        source = self.sources.text(i) if self.sources is not None else ""
        footprint: Any = shapely.from_wkb(wkb)
        return SceneGeo(footprint, crs or None, source or None, window)


class ListingBuilder:
    """Collects an archive's scenes row by row (`add`) into the buffers of `SceneColumns`
    (`columns`): nothing per scene is kept as a Python object."""

    def __init__(self, images_folder: Path, label_count: int, columns: Sequence[str]) -> None:
        """`columns`: the optional columns of labels.csv (`model.archive.OPTIONAL_COLUMNS`)
        the archive has; only theirs are kept."""
        self.images_folder, self.label_count = images_folder, label_count
        self.times = "acquired" in columns
        self.names, self.paths = BytesColumn(), BytesColumn()
        self.folder_codes: dict[str, int] = {}
        self.folders, self.splits = array("i"), array("b")
        self.labels, self.labelled = bytearray(), bytearray()
        self.geo = GeoColumns(columns) if set(columns) & set(GEO_COLUMNS) else None
        self.acquired = array("q")

    def add(
        self, name: str, folder: str, split: str, labels: tuple[int, ...], path: str,
        geo: SceneGeo | None, acquired: datetime | None,
    ) -> None:  # fmt: skip
        """One scene, checked (`path`: its image file relative to `images_folder`)."""
        self.names.add(name.encode())
        self.paths.add(path.encode())
        self.folders.append(self.folder_codes.setdefault(folder, len(self.folder_codes)))
        self.splits.append(SPLITS.index(split))
        self.labels += bytes(labels) if labels else bytes(self.label_count)
        self.labelled.append(bool(labels))
        if self.geo is not None:
            self.geo.add(geo)
        if self.times:
            self.acquired.append(NO_TIME if acquired is None else (acquired - EPOCH) // MICROSECOND)

    def columns(self) -> SceneColumns:
        return SceneColumns(self)
