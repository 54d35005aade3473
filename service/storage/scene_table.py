"""The scene metadata searches need, held in arrays: what a hit shows (name, folder, labels)
and what filters test (labels, folder, split, place, time added and acquired), for every
scene, sorted by id.

SQL stays the source of truth. The table belongs to one catalog generation: database
triggers raise the counter in `catalog_state` with every change to scenes, labels or scene
labels, and log which scenes each change touched in `catalog_changes` (migration 0002).
`Catalog.table` reads the table whole once, then, when the counter has moved, re-reads only
the scenes changed since (`SceneTable.patched`), or everything when labels themselves
changed, the log no longer reaches back far enough, or most scenes changed (the counter, the
written embeddings and the coded columns: `service.storage.scene_reading`). A search reads
its hits' metadata and evaluates its filters with numpy (binary search by id, a boolean
column per label) instead of loading an ORM object per hit or resolving the filter in SQL.

Memory: about 8 bytes (id) + the name as a Python string (about 70 bytes for 20
characters) + 4 (folder) + 4 (split) + 4 (label set) + 8 (time added) + 8 (time acquired) +
one byte per label per scene; a million scenes with 17 labels take about 130 MB, and 48 more
bytes per scene
for the footprints' bounds and centres.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property

import numpy as np
from sqlalchemy import Connection, select

from index.filters import ACQUIRED, PLACES, SceneFilter, utc
from index.id_mask import IdMask
from service.errors import BadRequestError
from service.storage.db import Label, Scene, SceneFootprint, SceneLabel
from service.storage.scene_places import PlaceIndex
from service.storage.scene_reading import (
    CHUNK,
    WrittenVectors,
    coded,
    generation_of,
    merged_coded,
)


@dataclass(frozen=True)
class SceneRow:
    """One scene as a search hit shows it."""

    id: int
    name: str
    folder: str
    labels: tuple[str, ...]
    placed: bool = False
    """Whether it has a footprint (SQL's `scene_footprints` holds it)."""
    added: datetime | None = None
    """When it entered the archive (UTC)."""
    acquired: datetime | None = None
    """When its pixels were taken (UTC), when known."""


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ID_CONDITIONS = frozenset({"exclude_ids", "allow_ids"})
MASKS_KEPT = 32
"""Filters whose masks a table keeps (a bool per scene each: 32 MB at a million scenes)."""
MICROSECOND = timedelta(microseconds=1)
UNKNOWN = np.iinfo(np.int64).min
"""An acquisition time not known (numpy's NaT as datetime64[us])."""


def epoch_us(moment: datetime) -> int:
    """An instant as microseconds since the Unix epoch (a time without a zone read as UTC,
    as SQLite gives the stored UTC times back)."""
    return (utc(moment) - EPOCH) // MICROSECOND


def _positions(sorted_ids: np.ndarray, ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Each id's row in `sorted_ids`, -1 for an id it does not hold."""
    ids = np.asarray(ids, dtype=np.int64)
    if not len(sorted_ids):
        return np.full(len(ids), -1, dtype=np.int64)
    rows = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
    return np.where(sorted_ids[rows] == ids, rows, -1)


@dataclass(frozen=True)
class SceneTable:
    generation: int
    ids: np.ndarray
    """(n,) int64, sorted."""
    names: np.ndarray
    """(n,) object: each scene's image stem."""
    folders: np.ndarray
    """(n,) int32 codes into `folder_names`."""
    folder_names: list[str]
    splits: np.ndarray
    """(n,) int32 codes into `split_names`."""
    split_names: list[str]
    labels: np.ndarray
    """(n, labels) bool: whether scene i carries label j of `label_names`."""
    label_names: list[str]
    """Every label of the catalog, by name."""
    label_sets: np.ndarray
    """(n,) int32 codes into `label_set_names`: each scene's labels at once, for hits."""
    label_set_names: list[tuple[str, ...]]
    written: WrittenVectors = field(default_factory=lambda: WrittenVectors.empty(None))
    """The embeddings SQL keeps for scenes added through the API, under the served model."""
    places: np.ndarray = field(default_factory=lambda: np.full((0, 6), np.nan))
    """(n, 6) float64: each footprint's min_lon, min_lat, max_lon, max_lat, lon, lat (its
    centre); NaN for a scene without one."""
    added: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """(n,) int64: when each scene entered the archive (`scenes.created_at`), microseconds
    since the Unix epoch."""
    acquired: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """(n,) int64: when each scene was acquired (`scenes.acquired`), microseconds since the
    Unix epoch; `UNKNOWN` where not known."""

    @classmethod
    def read(
        cls,
        connection: Connection,
        only: np.ndarray | None = None,
        generation: int | None = None,
        model_version: str | None = None,
    ) -> SceneTable:
        """The table as the connection sees it: every scene, or the scenes of `only` that
        exist, labelled with `generation` or the one read first (so a change made while
        reading is never missed: it moves the counter past the table's), with the written
        embeddings of `model_version`."""
        if generation is None:
            generation = generation_of(connection)
        written = WrittenVectors.read(connection, model_version, only)
        labels = connection.execute(select(Label.id, Label.name).order_by(Label.name)).all()
        scene_query = select(
            Scene.id, Scene.name, Scene.folder, Scene.split, Scene.created_at, Scene.acquired
        )
        pair_query = select(SceneLabel.scene_id, SceneLabel.label_id)
        f = SceneFootprint
        place_query = select(f.scene_id, f.min_lon, f.min_lat, f.max_lon, f.max_lat, f.lon, f.lat)
        if only is None:
            rows = connection.execute(scene_query).all()
            pairs = connection.execute(pair_query).all()
            placed = connection.execute(place_query).all()
        else:
            rows, pairs, placed = [], [], []
            wanted = [int(i) for i in only]
            for start in range(0, len(wanted), CHUNK):
                chunk = wanted[start : start + CHUNK]
                rows += connection.execute(scene_query.where(Scene.id.in_(chunk))).all()
                pairs += connection.execute(pair_query.where(SceneLabel.scene_id.in_(chunk))).all()
                placed += connection.execute(place_query.where(f.scene_id.in_(chunk))).all()
        # (numpy asked to convert SQLAlchemy rows probes each for array attributes: slow)
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        rows = [rows[i] for i in order]
        names = np.empty(len(rows), dtype=object)
        names[:] = [row[1] for row in rows]
        folders, folder_names = coded([row[2] for row in rows])
        splits, split_names = coded([row[3] for row in rows])
        added = np.fromiter((epoch_us(row[4]) for row in rows), dtype=np.int64, count=len(rows))
        acquired = np.fromiter(
            (UNKNOWN if row[5] is None else epoch_us(row[5]) for row in rows),
            dtype=np.int64,
            count=len(rows),
        )
        matrix = np.zeros((len(ids), len(labels)), dtype=bool)
        if pairs:
            scene_ids = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
            label_ids = np.fromiter((p[1] for p in pairs), dtype=np.int64, count=len(pairs))
            known = np.asarray([label_id for label_id, _ in labels], dtype=np.int64)
            by_id = np.argsort(known)
            columns = by_id[np.searchsorted(known[by_id], label_ids)]
            matrix[np.searchsorted(ids, scene_ids), columns] = True
        label_names = [name for _, name in labels]
        # each distinct row of the matrix once (a few hundred in UCM), not once per scene
        packed = np.packbits(matrix, axis=1) if label_names else np.zeros((len(ids), 1), np.uint8)
        combos, label_sets = np.unique(packed, axis=0, return_inverse=True)
        label_set_names = [
            tuple(label_names[j] for j in np.flatnonzero(np.unpackbits(combo)[: len(label_names)]))
            for combo in combos
        ]
        set_codes = np.asarray(label_sets, dtype=np.int32).reshape(-1)
        places = np.full((len(ids), 6), np.nan)
        if placed:
            values = np.asarray([p[1:] for p in placed], dtype=np.float64)
            rows_of = _positions(ids, [p[0] for p in placed])
            places[rows_of[rows_of >= 0]] = values[rows_of >= 0]
        return cls(
            generation, ids, names, folders, folder_names, splits, split_names, matrix,
            label_names, set_codes, label_set_names, written, places, added, acquired,
        )  # fmt: skip

    def patched(self, connection: Connection, changed: np.ndarray, generation: int) -> SceneTable:
        """This table with the scenes of `changed` re-read (added, updated or gone), as of
        `generation`; read whole when the labels themselves changed."""
        model = self.written.model_version
        fresh = SceneTable.read(connection, np.unique(changed), generation, model)
        if fresh.label_names != self.label_names:
            return SceneTable.read(connection, generation=generation, model_version=model)
        keep = ~np.isin(self.ids, changed)
        ids = np.concatenate([self.ids[keep], fresh.ids])
        order = np.argsort(ids, kind="stable")
        folders, folder_names = merged_coded(
            self.folders[keep], self.folder_names, fresh.folders, fresh.folder_names
        )
        splits, split_names = merged_coded(
            self.splits[keep], self.split_names, fresh.splits, fresh.split_names
        )
        label_sets, label_set_names = merged_coded(
            self.label_sets[keep], self.label_set_names, fresh.label_sets, fresh.label_set_names
        )
        return SceneTable(
            generation=fresh.generation,
            ids=ids[order],
            names=np.concatenate([self.names[keep], fresh.names])[order],
            folders=folders[order],
            folder_names=folder_names,
            splits=splits[order],
            split_names=split_names,
            labels=np.concatenate([self.labels[keep], fresh.labels])[order],
            label_names=self.label_names,
            label_sets=label_sets[order],
            label_set_names=label_set_names,
            written=self.written.patched(fresh.written, changed),
            places=np.concatenate([self.places[keep], fresh.places])[order],
            added=np.concatenate([self.added[keep], fresh.added])[order],
            acquired=np.concatenate([self.acquired[keep], fresh.acquired])[order],
        )

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Each id's row, -1 for an id the catalog does not hold."""
        return _positions(self.ids, ids)

    def rows(self, ids: Sequence[int] | np.ndarray) -> dict[int, SceneRow]:
        """The scenes held among `ids`, by id (ids the catalog does not hold are absent)."""
        ids = np.asarray(ids, dtype=np.int64)
        rows = self.positions(ids)
        held = rows >= 0
        kept, rows = ids[held].tolist(), rows[held]
        names, folders = self.names[rows].tolist(), self.folders[rows].tolist()
        placed = (~np.isnan(self.places[rows, 0])).tolist()
        sets, folder_names, set_names = (
            self.label_sets[rows].tolist(),
            self.folder_names,
            self.label_set_names,
        )
        added: list[datetime | None] = (
            [EPOCH + MICROSECOND * us for us in self.added[rows].tolist()]
            if len(self.added) == len(self.ids)
            else [None] * len(kept)  # a table made without the times
        )
        acquired: list[datetime | None] = (
            [None if us == UNKNOWN else EPOCH + MICROSECOND * us
             for us in self.acquired[rows].tolist()]
            if len(self.acquired) == len(self.ids)
            else [None] * len(kept)
        )  # fmt: skip
        return {
            scene_id: SceneRow(
                scene_id, name, folder_names[folder], set_names[labels], place, time, taken
            )
            for scene_id, name, folder, labels, place, time, taken in zip(
                kept, names, folders, sets, placed, added, acquired, strict=True
            )
        }

    def _columns(self, names: Sequence[str]) -> list[int]:
        column = {name: number for number, name in enumerate(self.label_names)}
        unknown = sorted(set(names) - set(column))
        if unknown:
            raise BadRequestError(
                f"unknown label(s) {', '.join(unknown)}; the labels are: "
                f"{', '.join(self.label_names)}",
                code="unknown_label",
            )
        return [column[name] for name in names]

    def check_labels(self, names: Sequence[str]) -> None:
        """Raise the 400 of an unknown label name."""
        self._columns(names)

    @cached_property
    def _masks(self) -> dict[tuple[object, ...], np.ndarray]:
        """The masks of the last MASKS_KEPT filters evaluated (ids apart), oldest first."""
        return {}

    def mask(self, where: SceneFilter) -> np.ndarray:
        """Which scenes pass the filter (the semantics of `SceneFilter.passes`). Its
        conditions other than ids are evaluated once per table and kept (read-only: the
        mask of a filter searched again costs nothing, at a million scenes 1 to 30 ms to
        make); its ids are applied to a copy."""
        key = where.without(ID_CONDITIONS).key()
        keep = self._masks.get(key)
        if keep is None:
            keep = self._evaluated(where.without(ID_CONDITIONS))
            keep.flags.writeable = False
            self._masks[key] = keep
            while len(self._masks) > MASKS_KEPT:
                self._masks.pop(next(iter(self._masks)), None)
        if not where.conditions() & ID_CONDITIONS:
            return keep
        keep = keep.copy()
        if len(where.exclude_ids):
            rows = self.positions(where.exclude_ids)
            keep[rows[rows >= 0]] = False
        if isinstance(where.allow_ids, IdMask):  # a kept mask (a saved concept's)
            allow = where.allow_ids
            keep &= allow.mask if allow.universe is self.ids else allow.contains(self.ids)
        elif where.allow_ids is not None:
            allowed = np.zeros(len(self.ids), dtype=bool)
            rows = self.positions(np.asarray(where.allow_ids, dtype=np.int64))
            allowed[rows[rows >= 0]] = True
            keep &= allowed
        return keep

    def allowed(self, where: SceneFilter) -> IdMask:
        """The scenes that pass the filter, as a mask over the table's ids (`IdMask`: a
        store searches it without listing the ids)."""
        return IdMask(self.ids, self.mask(where))

    def _evaluated(self, where: SceneFilter) -> np.ndarray:
        """`mask` of a filter without id conditions, evaluated on the columns."""
        keep = np.ones(len(self.ids), dtype=bool)
        for j in self._columns(where.labels_all):
            keep &= self.labels[:, j]
        if where.labels_any:
            keep &= self.labels[:, self._columns(where.labels_any)].any(axis=1)
        if where.labels_none:
            keep &= ~self.labels[:, self._columns(where.labels_none)].any(axis=1)
        for value, codes, names in (
            (where.folder, self.folders, self.folder_names),
            (where.split, self.splits, self.split_names),
        ):
            if value is not None:
                keep &= codes == (names.index(value) if value in names else -1)
        if where.added_after is not None:
            keep &= self.added >= epoch_us(where.added_after)
        if where.added_before is not None:
            keep &= self.added < epoch_us(where.added_before)
        if where.conditions() & ACQUIRED:
            keep &= self.acquired_in(where)
        if where.conditions() & PLACES:
            keep &= self.placed(where, keep)
        return keep

    def acquired_in(self, where: SceneFilter) -> np.ndarray:
        """Which scenes were acquired when the filter's acquisition conditions say (a scene
        of unknown time passes none)."""
        keep = self.acquired != UNKNOWN
        if where.acquired_after is not None:
            keep &= self.acquired >= epoch_us(where.acquired_after)
        if where.acquired_before is not None:
            keep &= self.acquired < epoch_us(where.acquired_before)
        if where.months:
            month = self.acquired.astype("datetime64[us]").astype("datetime64[M]").astype(np.int64)
            keep &= np.isin(month % 12 + 1, np.asarray(where.months, dtype=np.int64))
        return keep

    @cached_property
    def _places(self) -> PlaceIndex:
        return PlaceIndex(self.places)

    def placed(self, where: SceneFilter, among: np.ndarray | None = None) -> np.ndarray:
        """Which scenes lie where the filter's place conditions say, tested only among the
        rows `among` marks (all by default; `service.storage.scene_places`)."""
        return self._places.placed(where, among)

    def allowed_ids(self, where: SceneFilter) -> np.ndarray:
        """The sorted ids of the scenes that pass the filter."""
        return self.ids[self.mask(where)]
