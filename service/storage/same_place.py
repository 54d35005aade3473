"""The same place over time: the scenes whose footprint covers a share of one scene's
footprint (`GET /scenes/{id}/same-place`).

The share (the *overlap*) of another scene is area(this ∩ other) / area(this): the part of
this scene's footprint the other covers, so a larger scene over this one covers 1, and this
one over a larger scene covers less. Areas are planar, in square degrees of longitude and
latitude, as PostGIS's `ST_Area` measures a geometry of SRID 4326; for footprints of the same
place the ratio differs from the ratio of ground areas by far less than its rounding.

The candidates are the scenes whose bounds meet this footprint's, found through the spatial
index (`dialects.ids_in_box`: the R*Tree on SQLite, the GiST box on PostgreSQL), never a scan
of every footprint. Their shares are then exact: in PostGIS (`ST_Area(ST_Intersection(...))`)
where the footprints carry its `geom` column, else with shapely over the candidates' stored
GeoJSON. Both are GEOS, on the same coordinates (RFC 7946: a footprint across the
antimeridian split at 180, so the parts meet where they are), and give the same answers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from sqlalchemy import ColumnElement, Connection, Select, func, literal_column, select

from service.storage.db import Scene, SceneFootprint
from service.storage.dialects import ids_in_box
from service.storage.listing import COLUMNS, ordered

DECIMALS = 6
"""Shares are rounded to this many decimals: the same footprint covers exactly 1, and GEOS's
last bits (which differ with the order of a polygon's vertices) never decide a threshold."""


def overlaps(connection: Connection, scene_id: int, postgis: str | None) -> dict[int, float] | None:
    """The other scenes whose footprint covers part of this scene's, by id, with the share
    of this footprint each covers (above 0, rounded to `DECIMALS`); None when this scene has
    no footprint with an area (none, or a point). `postgis`: the schema of PostGIS's
    functions where the footprints carry `geom` (`dialects.postgis_schema`), else None."""
    table = SceneFootprint.__table__
    found = connection.execute(select(table).where(table.c.scene_id == scene_id)).mappings().first()
    if found is None:
        return None
    footprint = shapely.from_geojson(found["geometry"])
    if footprint.area <= 0.0:
        return None
    bounds = [found["min_lon"], found["min_lat"], found["max_lon"], found["max_lat"]]
    candidates = ids_in_box(connection.dialect.name, bounds)
    shares: np.ndarray
    if postgis:
        pairs = connection.execute(_postgis_shares(postgis, scene_id, candidates)).all()
        ids = np.asarray([i for i, _ in pairs], dtype=np.int64)
        shares = np.asarray([s for _, s in pairs], dtype=np.float64)
    else:
        rows = connection.execute(
            select(table.c.scene_id, table.c.geometry).where(
                table.c.scene_id.in_(candidates), table.c.scene_id != scene_id
            )
        ).all()
        ids = np.asarray([row[0] for row in rows], dtype=np.int64)
        others = shapely.from_geojson([row[1] for row in rows])
        shares = shapely.area(shapely.intersection(others, footprint)) / footprint.area
    shares = np.round(np.minimum(shares, 1.0), DECIMALS)
    return {int(i): float(s) for i, s in zip(ids, shares, strict=True) if s > 0.0}


def _postgis_shares(schema: str, scene_id: int, candidates: Select[Any]) -> Select[Any]:
    """(scene id, share of this footprint it covers) for each candidate whose `geom` meets
    this scene's, in PostGIS."""
    gis = getattr(func, schema)
    here = SceneFootprint.__table__.alias("here")
    there = SceneFootprint.__table__.alias("there")
    here_geom: ColumnElement[Any] = literal_column("here.geom")  # 0006's; not modelled
    there_geom: ColumnElement[Any] = literal_column("there.geom")
    share = gis.ST_Area(gis.ST_Intersection(there_geom, here_geom)) / gis.ST_Area(here_geom)
    meets = gis.ST_Intersects(there_geom, here_geom)
    return (
        select(there.c.scene_id, share)
        .select_from(there.join(here, meets))
        .where(here.c.scene_id == scene_id)
        .where(there.c.scene_id.in_(candidates), there.c.scene_id != scene_id)
    )


def by_acquisition(ids: list[int], limit: int, offset: int) -> Select[*tuple[Any, ...]]:
    """The SELECT of a page of these scenes' `COLUMNS` (`listing.listed` reads them), by
    acquisition time, the scenes of unknown time last, the id breaking ties."""
    query = ordered(select(*COLUMNS).where(Scene.id.in_(ids)), "acquired")
    return query.limit(limit).offset(offset)
