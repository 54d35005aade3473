"""Where SQLite and PostgreSQL differ, in one place: the rest of the service writes SQL that
both run, and asks here where they cannot.

- SQLite is the embedded default: a file whose folder is made on first use, read locally
  (in WAL mode a read never waits for a writer, cheap enough for the event loop).
- Row locks: PostgreSQL skips rows another transaction holds (`FOR UPDATE SKIP LOCKED`) so
  concurrent job workers take different rows; SQLite's single writer makes the caller's
  conditional UPDATE atomic without them.
- The calendar month of a stored UTC time: SQLite's text as it is, PostgreSQL's timestamptz
  read in UTC whatever the session's time zone.
- The spatial index behind box queries: an R*Tree on SQLite, a GiST box on PostgreSQL
  (migration 0005), and PostGIS where the database has it (migration 0006).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    extract,
    func,
    literal_column,
    select,
    text,
    union,
)

from model.lonlat import shifts
from service.storage.db import SceneFootprint

SelectT = TypeVar("SelectT", bound=Select[Any])

RTREE_STEP = 2 * 2.0**-16
"""Two float32 steps at the largest coordinates (|v| in [128, 256) degrees): the most an
R*Tree bound may lie outside the true one, twice over."""


def is_embedded(engine: Engine) -> bool:
    """SQLite: a local file, no server."""
    return engine.dialect.name == "sqlite"


def ensure_database_folder(engine: Engine) -> None:
    """Make the folder of an embedded database's file (the default `data/grn.db`)."""
    database = engine.url.database
    if is_embedded(engine) and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def skip_locked(query: SelectT, dialect: str) -> SelectT:
    """`query` locking the rows it reads and skipping those another transaction holds, where
    the database can (PostgreSQL); as it is on SQLite, whose one writer serialises."""
    if dialect == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


def utc_month(dialect: str, column: Any) -> ColumnElement[int]:
    """The calendar month (1-12) of a stored time, in UTC."""
    if dialect == "postgresql":
        column = func.timezone("UTC", column)
    return extract("month", column)


def ids_in_box(dialect: str, bounds: Sequence[float]) -> Select[Any]:
    """The ids of the scenes whose footprint's bounds meet the box (min_lon, min_lat, max_lon,
    max_lat; min_lon above max_lon across the antimeridian), through the spatial index. The
    stored bounds are unwrapped (`model.lonlat`), so the index is asked for the box as it is
    and one turn of the Earth either side."""
    boxes = [_ids_in_plain_box(dialect, moved, n) for n, moved in enumerate(shifts(bounds))]
    ids = union(*boxes).subquery()
    return select(ids.c[0])


def _ids_in_plain_box(dialect: str, bounds: Sequence[float], tag: int) -> Select[Any]:
    """`ids_in_box` for one box as the index keeps bounds (bind names made unique by `tag`)."""
    min_lon, min_lat, max_lon, max_lat = (float(v) for v in bounds)
    if dialect == "sqlite":
        # The R*Tree keeps 32-bit bounds rounded outwards, so it may answer footprints that
        # miss the box by up to a float32 step (under 1.6e-5 degrees, about 2 m). Entries
        # that meet the box shrunk by two steps certainly meet it; only those in the thin
        # band between are checked on the stored 64-bit bounds.
        sql = (
            "SELECT id FROM scene_footprint_boxes WHERE max_lon >= :in_min_lon AND "
            "min_lon <= :in_max_lon AND max_lat >= :in_min_lat AND min_lat <= :in_max_lat "
            "UNION ALL SELECT b.id FROM scene_footprint_boxes AS b JOIN scene_footprints AS f "
            "ON f.scene_id = b.id WHERE b.max_lon >= :min_lon AND b.min_lon <= :max_lon "
            "AND b.max_lat >= :min_lat AND b.min_lat <= :max_lat AND NOT (b.max_lon >= "
            ":in_min_lon AND b.min_lon <= :in_max_lon AND b.max_lat >= :in_min_lat AND "
            "b.min_lat <= :in_max_lat) AND f.max_lon >= :min_lon AND f.min_lon <= :max_lon "
            "AND f.max_lat >= :min_lat AND f.min_lat <= :max_lat"
        )
        values = {
            "min_lon": min_lon, "min_lat": min_lat, "max_lon": max_lon, "max_lat": max_lat,
            "in_min_lon": min_lon + RTREE_STEP, "in_min_lat": min_lat + RTREE_STEP,
            "in_max_lon": max_lon - RTREE_STEP, "in_max_lat": max_lat - RTREE_STEP,
        }  # fmt: skip
        for name in sorted(values, key=len, reverse=True):  # in_min_lon before min_lon
            sql = sql.replace(f":{name}", f":{name}_{tag}")
        boxes = text(sql).bindparams(**{f"{k}_{tag}": v for k, v in values.items()})
        return select(literal_column("id")).select_from(
            boxes.columns(literal_column("id")).subquery()
        )
    footprint_box = func.box(
        func.point(SceneFootprint.min_lon, SceneFootprint.min_lat),
        func.point(SceneFootprint.max_lon, SceneFootprint.max_lat),
    )
    query_box = func.box(func.point(min_lon, min_lat), func.point(max_lon, max_lat))
    return select(SceneFootprint.scene_id).where(footprint_box.op("&&")(query_box))


def postgis_schema(connection: Connection) -> str | None:
    """The schema of PostGIS's functions when the footprints carry its `geom` column
    (migration 0006), else None: SQLite, or PostgreSQL without PostGIS."""
    if connection.dialect.name != "postgresql":
        return None
    found = connection.execute(
        text(
            "SELECT e.extnamespace::regnamespace::text FROM pg_extension e, "
            "information_schema.columns c WHERE e.extname = 'postgis' AND "
            "c.table_schema = current_schema() AND c.table_name = 'scene_footprints' AND "
            "c.column_name = 'geom'"
        )
    ).scalar()
    return str(found) if found else None
