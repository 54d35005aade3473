"""The one filter type of a search, from the API request to SQL and the vector store.

A `SceneFilter` keeps the scenes that carry every label of `labels_all`, at least one label of
`labels_any`, none of `labels_none`, come from the scene folder `folder`, belong to `split`,
are not in `exclude_ids`, when `allow_ids` is given are in it, entered the archive at or
after `added_after` and before `added_before`, were acquired at or after `acquired_after`,
before `acquired_before` and in one of the calendar `months` (1-12, UTC, any year: a season
across years), and when a place is given lie there: `bbox` keeps the scenes whose
footprint's bounds meet the box (longitude a circle: a box or bounds across the antimeridian
meet what lies either side of it, `model.lonlat`), `within` those whose footprint's
centre lies in the polygon (on its edge counts), `near` those whose centre lies within the
radius (great-circle metres); a scene without a footprint passes no place condition, nor a
scene of unknown time (or acquisition time) a time condition. `passes` is the reference
meaning that every translation follows.

It is parsed once, at the edge (the API's `service.api.schemas.filters.FilterFields`), and
translated by one function per backend: the catalog's arrays (`SceneTable.mask`), SQL
(`service.storage.filter_sql.scene_where`), FAISS (ids only, `Searcher.search`) and Milvus
(`milvus_expression`). Each store says which conditions it evaluates itself
(`ServedIndex.native_filters`); the service turns a filter that uses any other condition into
an allow-list of ids from the arrays, and SQL without PostGIS does the same for `within` and
`near`. Adding a condition is its field here, its line in `passes`, its translators and its
test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import shapely

from index.id_mask import IdMask
from model.geo import haversine_m
from model.lonlat import lon_meets, unwrapped
from model.times import utc

__all__ = ["CONDITIONS", "PLACES", "SceneFilter", "SceneMeta", "utc"]

CONDITIONS = (
    "labels_all",
    "labels_any",
    "labels_none",
    "folder",
    "split",
    "exclude_ids",
    "allow_ids",
    "bbox",
    "within",
    "near",
    "added_after",
    "added_before",
    "acquired_after",
    "acquired_before",
    "months",
)
PLACES = frozenset({"bbox", "within", "near"})
ACQUIRED = frozenset({"acquired_after", "acquired_before", "months"})
SET_WHEN_GIVEN = frozenset(
    {"allow_ids", "within", "added_after", "added_before", "acquired_after", "acquired_before"}
)
"""Conditions set by any value but None (an empty allow-list allows nothing); the others by
a value that is not empty."""


def _sets(name: str, value: object) -> bool:
    if value is None:
        return False
    return name in SET_WHEN_GIVEN or len(value) > 0  # type: ignore[arg-type]


@dataclass(frozen=True)
class SceneMeta:
    """What a vector store may keep beside a vector to filter by."""

    labels: tuple[str, ...] = ()
    folder: str = ""
    bounds: tuple[float, float, float, float] | None = None
    """The footprint's (min_lon, min_lat, max_lon, max_lat), WGS84; None: not georeferenced."""
    centre: tuple[float, float] | None = None
    """The footprint's centroid (lon, lat)."""
    added: datetime | None = None
    """When the scene entered the archive (no store keeps it: the service filters by it
    with an allow-list)."""
    acquired: datetime | None = None
    """When its pixels were taken (no store keeps it either)."""


@dataclass(frozen=True)
class SceneFilter:
    labels_all: Sequence[str] = ()
    labels_any: Sequence[str] = ()
    labels_none: Sequence[str] = ()
    folder: str | None = None
    """The scene folder (the `scene` column of labels.csv)."""
    split: str | None = None
    exclude_ids: Sequence[int] = ()
    allow_ids: Sequence[int] | np.ndarray | IdMask | None = None
    """Only these ids; an `IdMask` (a mask over the catalog's ids) is searched without
    listing them."""
    bbox: tuple[float, float, float, float] | None = None
    """(min_lon, min_lat, max_lon, max_lat), WGS84 (`model.geo.parse_bbox`); min_lon above
    max_lon across the antimeridian (RFC 7946)."""
    within: Any = None
    """A shapely Polygon or MultiPolygon (split at the antimeridian) in WGS84
    (`model.geo.polygon_from_geojson`)."""
    near: tuple[float, float, float] | None = None
    """(lon, lat, radius in metres)."""
    added_after: datetime | None = None
    """Scenes that entered the archive at this instant or later (kept in UTC)."""
    added_before: datetime | None = None
    """Scenes that entered the archive before this instant (kept in UTC)."""
    acquired_after: datetime | None = None
    """Scenes acquired at this instant or later (kept in UTC)."""
    acquired_before: datetime | None = None
    """Scenes acquired before this instant (kept in UTC)."""
    months: Sequence[int] = ()
    """Scenes acquired in one of these calendar months (1-12, in UTC), in any year."""

    def __post_init__(self) -> None:
        for name in ("added_after", "added_before", "acquired_after", "acquired_before"):
            moment = getattr(self, name)
            if moment is not None:
                object.__setattr__(self, name, utc(moment))

    def conditions(self) -> frozenset[str]:
        """The names of the conditions this filter sets (an empty allow-list is one: it
        allows nothing)."""
        return frozenset(name for name in CONDITIONS if _sets(name, getattr(self, name)))

    @property
    def restricts(self) -> bool:
        """Whether it narrows the scenes beyond excluding a few ids."""
        return bool(self.conditions() - {"exclude_ids"})

    @property
    def label_names(self) -> list[str]:
        return [*self.labels_all, *self.labels_any, *self.labels_none]

    def key(self) -> tuple[Any, ...]:
        """The conditions as one hashable value, equal for filters that keep the same
        scenes by the same conditions (label lists as sets, a polygon by its WKB): what a
        cache of evaluated filters is keyed by."""
        parts: list[tuple[str, Any]] = []
        for name in sorted(self.conditions()):
            value = getattr(self, name)
            if name == "within":
                value = shapely.to_wkb(value)
            elif name in ("exclude_ids", "allow_ids"):
                value = np.unique(np.asarray(value, dtype=np.int64)).tobytes()
            elif name.startswith("labels_"):
                value = tuple(sorted(set(value)))
            elif isinstance(value, list):
                value = tuple(value)
            parts.append((name, value))
        return tuple(parts)

    def excluding(self, *ids: int) -> SceneFilter:
        return replace(self, exclude_ids=[*self.exclude_ids, *ids])

    def only(self, names: Iterable[str]) -> SceneFilter:
        """The conditions named, the others unset."""
        return SceneFilter(**{name: getattr(self, name) for name in names})

    def without(self, names: Iterable[str]) -> SceneFilter:
        """The conditions named unset, the others as they are."""
        empty = SceneFilter()
        unset: dict[str, Any] = {name: getattr(empty, name) for name in set(names)}
        return replace(self, **unset)

    def allowing(self, ids: Sequence[int] | np.ndarray | IdMask) -> SceneFilter:
        """Also only the scenes of `ids` (an allow-list that meets the one it has). A mask
        stays a mask (a store searches it without listing its ids) unless the filter
        already has a list."""
        if isinstance(ids, IdMask) and self.allow_ids is None:
            return replace(self, allow_ids=ids)
        if isinstance(ids, IdMask) and isinstance(self.allow_ids, IdMask):
            return replace(self, allow_ids=ids.meeting(self.allow_ids))
        allowed = np.asarray(ids, dtype=np.int64)
        if self.allow_ids is not None:
            allowed = np.intersect1d(allowed, np.asarray(self.allow_ids, dtype=np.int64))
        return replace(self, allow_ids=allowed)

    def resolved(
        self, native: frozenset[str], allowed_ids: Callable[[SceneFilter], np.ndarray]
    ) -> SceneFilter:
        """This filter with the conditions outside `native` replaced by the allow-list
        `allowed_ids` gives for them (a backend that evaluates only `native`)."""
        rest = self.conditions() - native
        return self.without(rest).allowing(allowed_ids(self.only(rest))) if rest else self

    def passes(self, scene_id: int, meta: SceneMeta, split: str | None = None) -> bool:
        """The reference semantics every store must follow."""
        labels = set(meta.labels)
        return (
            set(self.labels_all) <= labels
            and (not self.labels_any or bool(labels & set(self.labels_any)))
            and not labels & set(self.labels_none)
            and (self.folder is None or meta.folder == self.folder)
            and (self.split is None or split == self.split)
            and scene_id not in set(self.exclude_ids)
            and (self.allow_ids is None or scene_id in set(self.allow_ids))
            and _between(meta.added, self.added_after, self.added_before)
            and _between(meta.acquired, self.acquired_after, self.acquired_before)
            and (not self.months or self._in_months(meta.acquired))
            and self._placed(meta)
        )

    def _in_months(self, acquired: datetime | None) -> bool:
        return acquired is not None and utc(acquired).month in set(self.months)

    def _placed(self, meta: SceneMeta) -> bool:
        if not self.conditions() & PLACES:
            return True
        if meta.bounds is None or meta.centre is None:
            return False
        lon, lat = meta.centre
        if self.bbox is not None:
            min_lon, min_lat, max_lon, max_lat = unwrapped(self.bbox)
            b = unwrapped(meta.bounds)
            if not lon_meets(b[0], b[2], min_lon, max_lon) or b[3] < min_lat or b[1] > max_lat:
                return False
        if self.within is not None and not shapely.intersects_xy(self.within, lon, lat):
            return False
        if self.near is not None:
            lon0, lat0, radius = self.near
            distance = haversine_m(np.array([lon]), np.array([lat]), lon0, lat0)[0]
            if distance > radius:
                return False
        return True


def _between(moment: datetime | None, after: datetime | None, before: datetime | None) -> bool:
    """Whether `moment` is at or after `after` and before `before` (either None: no bound);
    an unknown moment passes only when neither is given."""
    if after is None and before is None:
        return True
    if moment is None:
        return False
    moment = utc(moment)
    return (after is None or moment >= after) and (before is None or moment < before)
