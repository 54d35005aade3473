"""Footprints in SQL: the rows `grn import` writes for georeferenced scenes, and the box query
that uses the database's spatial index (`service.storage.dialects.ids_in_box`: an R*Tree on
SQLite, a GiST box on PostgreSQL; migration 0005). Searches filter by place on the catalog's
arrays (`SceneTable.placed`) and listings in SQL, with the same meaning
(`index.filters.SceneFilter`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shapely.geometry import mapping
from sqlalchemy import ColumnElement, Connection, func, literal_column, or_, select

from index.filters import SceneFilter
from model.geo import SceneGeo, near_bounds
from model.lonlat import split_boxes
from service.storage.db import Scene, SceneFootprint
from service.storage.dialects import ids_in_box


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


def in_box(dialect: str, bounds: Sequence[float]) -> ColumnElement[bool]:
    """A WHERE clause on scenes: the footprint meets the box."""
    return Scene.id.in_(ids_in_box(dialect, bounds))


def postgis_where(schema: str, f: SceneFilter) -> list[ColumnElement[bool]]:
    """SceneFilter's place conditions as PostGIS tests on `scene_footprints` (the same
    meaning as `SceneTable.placed`: the box meets the footprint's bounds; the centre lies in
    the polygon; the centre lies within the great-circle radius, on a sphere), the polygon
    and the radius each led by an index test on `geom`. The box is tested on the stored
    bounds through their own index (`ids_in_box`): the bounds of a footprint split at the
    antimeridian are unwrapped (`model.lonlat`), while PostGIS's box of its MultiPolygon
    spans every longitude."""
    gis = getattr(func, schema)
    geom: ColumnElement[Any] = literal_column("scene_footprints.geom")  # 0006's; not modelled
    centre = gis.ST_SetSRID(gis.ST_MakePoint(SceneFootprint.lon, SceneFootprint.lat), 4326)
    overlaps = f'OPERATOR("{schema}".&&)'  # the schema may be off the search path
    tests: list[ColumnElement[bool]] = []
    if f.bbox is not None:
        tests.append(SceneFootprint.scene_id.in_(ids_in_box("postgresql", f.bbox)))
    if f.within is not None:
        polygon = gis.ST_SetSRID(gis.ST_GeomFromGeoJSON(json.dumps(mapping(f.within))), 4326)
        tests.append(geom.op(overlaps)(polygon))
        tests.append(gis.ST_Intersects(polygon, centre))
    if f.near is not None:
        lon, lat, radius = f.near
        near_box = [
            geom.op(overlaps)(gis.ST_MakeEnvelope(*part, 4326))
            for part in split_boxes(near_bounds(lon, lat, radius))
        ]
        tests.append(or_(*near_box) if len(near_box) > 1 else near_box[0])
        point = gis.ST_SetSRID(gis.ST_MakePoint(lon, lat), 4326)
        metres = gis.ST_DistanceSphere(centre, point)
        tests.append(metres <= radius)
    return tests


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


def sources_of(connection: Connection, ids: Sequence[int]) -> dict[int, str | None]:
    """Each scene's source raster (scenes without a footprint are absent)."""
    return {i: row["source"] for i, row in footprints(connection, ids).items()}
