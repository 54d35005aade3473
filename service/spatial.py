"""Footprints in SQL: the rows `grn import` writes for georeferenced scenes, and the box query
that uses the database's spatial index (an R*Tree on SQLite, a GiST box on PostgreSQL;
migration 0005). Searches filter by place on the catalog's arrays (`SceneTable.spatial_mask`)
and listings in SQL, with the same meaning (`index.filters.SceneFilter`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, func, literal_column, select, text

from model.geo import SceneGeo
from service.db import Scene, SceneFootprint


def footprint_row(scene_id: int, geo: SceneGeo) -> dict[str, Any]:
    """A `scene_footprints` row."""
    min_lon, min_lat, max_lon, max_lat = geo.bounds
    lon, lat = geo.centre
    return {
        "scene_id": scene_id,
        "min_lon": min_lon,
        "min_lat": min_lat,
        "max_lon": max_lon,
        "max_lat": max_lat,
        "lon": lon,
        "lat": lat,
        "geometry": geo.to_json(),
        "crs": geo.crs,
        "source": geo.source,
        "window": ",".join(str(v) for v in geo.window) if geo.window else None,
    }


def ids_in_box(dialect: str, bounds: Sequence[float]) -> Select[Any]:
    """The ids of the scenes whose footprint's bounds meet the box (min_lon, min_lat, max_lon,
    max_lat), through the spatial index."""
    min_lon, min_lat, max_lon, max_lat = (float(v) for v in bounds)
    if dialect == "sqlite":
        boxes = text(
            "SELECT id FROM scene_footprint_boxes WHERE max_lon >= :min_lon AND "
            "min_lon <= :max_lon AND max_lat >= :min_lat AND min_lat <= :max_lat"
        ).bindparams(min_lon=min_lon, min_lat=min_lat, max_lon=max_lon, max_lat=max_lat)
        return select(literal_column("id")).select_from(
            boxes.columns(literal_column("id")).subquery()
        )
    footprint_box = func.box(
        func.point(SceneFootprint.min_lon, SceneFootprint.min_lat),
        func.point(SceneFootprint.max_lon, SceneFootprint.max_lat),
    )
    query_box = func.box(func.point(min_lon, min_lat), func.point(max_lon, max_lat))
    return select(SceneFootprint.scene_id).where(footprint_box.op("&&")(query_box))


def in_box(dialect: str, bounds: Sequence[float]) -> ColumnElement[bool]:
    """A WHERE clause on scenes: the footprint meets the box."""
    return Scene.id.in_(ids_in_box(dialect, bounds))


def footprints(connection: Connection, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The stored footprints of these scenes, by id (scenes without one are absent)."""
    rows: dict[int, dict[str, Any]] = {}
    wanted = [int(i) for i in ids]
    table = SceneFootprint.__table__
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start : start + 1000]
        for row in connection.execute(select(table).where(table.c.scene_id.in_(chunk))).mappings():
            rows[int(row["scene_id"])] = dict(row)
    return rows
