"""Longitude is a circle: boxes and footprints across the antimeridian (longitude +-180) and
around the poles.

A box is (west, south, east, north). People give a box across the antimeridian as RFC 7946
and STAC do, with west > east (`177,-20,-177,-15`). Inside, a box is kept *unwrapped*: west
in [-180, 180] and east in [west, west + 360], so east passes 180 for a box across the
antimeridian (`177,-20,183,-15`). The box of an ordinary place (west <= east <= 180) is the
same in both forms. Two unwrapped boxes meet when their latitudes meet and their longitudes
meet as they are or one turn of the Earth apart (`lon_meets`).

Footprints follow RFC 7946: one that crosses the antimeridian is a MultiPolygon split there
(its bounds unwrapped, its centre the middle of its parts joined); one around a pole is a
Polygon along the full circle of longitudes down to the pole's latitude (its bounds all
longitudes). The centre of a footprint that reaches a pole is found in a polar projection.
Every other footprint keeps its bounds and centroid as shapely gives them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyproj
import shapely
from shapely.affinity import translate
from shapely.geometry import MultiPolygon, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

Box = tuple[float, float, float, float]
POLE_EPS = 1e-9
"""Latitudes within this of +-90 are the pole, whose longitude means nothing."""
_POLAR_CRS = {-1: "EPSG:3031", 1: "EPSG:3413"}


def unwrapped(bounds: Sequence[float]) -> Box:
    """A box as west, south, east, north with west in [-180, 180] and east in [west,
    west + 360] (from the RFC 7946 form, west > east across the antimeridian, or from a box
    whose west lies past -180)."""
    west, south, east, north = (float(v) for v in bounds)
    if east - west >= 360.0:
        return -180.0, south, 180.0, north
    if east < west:
        east += 360.0
    if west < -180.0:
        west, east = west + 360.0, east + 360.0
    return west, south, east, north


def rfc7946(bounds: Sequence[float]) -> Box:
    """An unwrapped box as RFC 7946 writes it: east - 360 when it passes 180."""
    west, south, east, north = (float(v) for v in bounds)
    return west, south, east - 360.0 if east > 180.0 else east, north


def split_boxes(bounds: Sequence[float]) -> list[Box]:
    """An unwrapped box as one or two boxes within [-180, 180]."""
    west, south, east, north = unwrapped(bounds)
    if east <= 180.0:
        return [(west, south, east, north)]
    return [(west, south, 180.0, north), (-180.0, south, east - 360.0, north)]


def shifts(bounds: Sequence[float]) -> list[Box]:
    """The unwrapped box as it is and one turn of the Earth east and west: the boxes an index
    of unwrapped rows is asked for (the turn west only where the box passes 180)."""
    west, south, east, north = unwrapped(bounds)
    moved = [(west, south, east, north), (west + 360.0, south, east + 360.0, north)]
    if east > 180.0:
        moved.append((west - 360.0, south, east - 360.0, north))
    return moved


def lon_meets(west: Any, east: Any, box_west: float, box_east: float) -> Any:
    """Whether unwrapped longitude spans [west, east] (numbers or arrays) meet the unwrapped
    span [box_west, box_east]."""
    meets = (west <= box_east) & (east >= box_west)
    for turn in (360.0, -360.0):
        meets = meets | ((west <= box_east + turn) & (east >= box_west + turn))
    return meets


def lon_inside(lon: Any, box_west: float, box_east: float) -> Any:
    """Whether longitudes in [-180, 180] (numbers or arrays) lie in the unwrapped span."""
    return ((lon >= box_west) & (lon <= box_east)) | (
        (lon + 360.0 >= box_west) & (lon + 360.0 <= box_east)
    )


def around_pole(geometry: BaseGeometry) -> int:
    """-1 or 1 for a footprint around the south or north pole (a Polygon along all longitudes,
    down to the pole), else 0."""
    west, south, east, north = geometry.bounds
    if not isinstance(geometry, Polygon) or east - west < 360.0 - 1e-6:
        return 0
    return -1 if south <= -90.0 + POLE_EPS else 1 if north >= 90.0 - POLE_EPS else 0


def crosses(geometry: BaseGeometry) -> bool:
    """Whether a footprint is split at the antimeridian: a MultiPolygon whose parts span more
    than half the Earth as written."""
    west, _, east, _ = geometry.bounds
    return isinstance(geometry, MultiPolygon) and east - west > 180.0 and not around_pole(geometry)


def place_of(geometry: BaseGeometry) -> tuple[Box, tuple[float, float]]:
    """A footprint's unwrapped bounds and its centre (lon in [-180, 180], lat)."""
    west, south, east, north = geometry.bounds
    pole = -1 if south <= -90.0 + POLE_EPS else 1 if north >= 90.0 - POLE_EPS else 0
    if pole and not isinstance(geometry, Point):  # its middle found where it is not stretched
        to_polar = pyproj.Transformer.from_crs("EPSG:4326", _POLAR_CRS[pole], always_xy=True)
        middle = shapely.transform(geometry, lambda xy: np.column_stack(to_polar.transform(*xy.T)))
        x, y = middle.centroid.x, middle.centroid.y
        lon, lat = to_polar.transform(x, y, direction="INVERSE")
        if around_pole(geometry):
            west, east = -180.0, 180.0
        elif crosses(geometry):
            west, _, east, _ = _joined(geometry).bounds
        return (float(west), south, float(east), north), (float(lon), float(lat))
    if crosses(geometry):
        joined = _joined(geometry)
        west, south, east, north = joined.bounds
        centre = joined.centroid
        lon = centre.x - 360.0 if centre.x > 180.0 else centre.x
        return (float(west), float(south), float(east), float(north)), (float(lon), centre.y)
    c = geometry.centroid
    return tuple(float(v) for v in geometry.bounds), (float(c.x), float(c.y))  # type: ignore[return-value]


def _joined(geometry: MultiPolygon) -> MultiPolygon:
    """A footprint split at the antimeridian with its western parts moved one turn east."""
    return MultiPolygon([p if p.centroid.x >= 0 else translate(p, 360.0) for p in geometry.geoms])


def ring_footprint(lon: np.ndarray, lat: np.ndarray) -> Polygon | MultiPolygon | None:
    """A reprojected ring's footprint when it crosses the antimeridian (a MultiPolygon split
    there, or a Polygon if it only touches it), goes round a pole (the pole's cap) or passes
    through one; None for every other ring, which the caller makes as before."""
    at_pole = np.abs(lat) >= 90.0 - POLE_EPS
    sided = _antimeridian_sides(lon, at_pole)
    if not at_pole.any() and np.ptp(sided) <= 180.0:
        return None if sided is lon else Polygon(np.column_stack([sided, lat]))
    lon = sided
    lon, lat = _without_pole_points(lon, lat, at_pole)
    steps = (np.diff(np.append(lon, lon[0])) + 180.0) % 360.0 - 180.0
    if abs(steps.sum()) > 180.0:  # the ring winds once round a pole
        return _cap(lon, lat, steps)
    if np.ptp(lon) <= 180.0:  # through a pole, not across the antimeridian
        return Polygon(np.column_stack([lon, lat]))
    shifted = np.where(lon < 0.0, lon + 360.0, lon)
    ring = shapely.make_valid(Polygon(np.column_stack([shifted, lat])))
    east = ring.intersection(box(-360.0, -90.0, 180.0, 90.0))
    west = translate(ring.intersection(box(180.0, -90.0, 540.0, 90.0)), -360.0)
    parts = [p for part in (east, west) for p in _polygons(part) if p.area > 0]
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def _antimeridian_sides(lon: np.ndarray, at_pole: np.ndarray) -> np.ndarray:
    """The ring's longitudes with each point on the antimeridian written as +180 or -180 on
    the side of the nearest point along the ring off it, not past a pole (a projection may
    give either)."""
    on_line = (np.abs(np.abs(lon) - 180.0) < POLE_EPS) & ~at_pole
    if not on_line.any() or (on_line | at_pole).all():
        return lon
    fixed = lon.copy()
    count = len(lon)
    for i in np.flatnonzero(on_line):
        for step in (1, -1):
            j = (i + step) % count
            while on_line[j] and j != i:
                j = (j + step) % count
            if not at_pole[j] and not on_line[j]:
                fixed[i] = 180.0 if lon[j] >= 0 else -180.0
                break
    return fixed


def _without_pole_points(
    lon: np.ndarray, lat: np.ndarray, at_pole: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The ring with each point at a pole replaced by the pole's line between its neighbours'
    longitudes (the pole is a line of latitude +-90 in longitude/latitude)."""
    if not at_pole.any():
        return lon, lat
    kept = np.flatnonzero(~at_pole)
    points: list[tuple[float, float]] = []
    for i in range(len(lon)):
        if not at_pole[i]:
            points.append((float(lon[i]), float(lat[i])))
            continue
        before = kept[kept < i][-1] if (kept < i).any() else kept[-1]
        after = kept[kept > i][0] if (kept > i).any() else kept[0]
        pole = 90.0 if lat[i] > 0 else -90.0
        points += [(float(lon[before]), pole), (float(lon[after]), pole)]
    ring = np.asarray(points)
    return ring[:, 0], ring[:, 1]


def _cap(lon: np.ndarray, lat: np.ndarray, steps: np.ndarray) -> Polygon:
    """The footprint of a ring round a pole: from longitude -180 to 180 along the ring, then
    down to the pole and back along it."""
    if steps.sum() < 0:  # make longitudes rise along the ring
        lon, lat = lon[::-1], lat[::-1]
        steps = (np.diff(np.append(lon, lon[0])) + 180.0) % 360.0 - 180.0
    jump = int(np.argmax(np.diff(np.append(lon, lon[0])) < -180.0))  # from about 180 to -180
    order = np.roll(np.arange(len(lon)), -(jump + 1))
    lon, lat = lon[order], lat[order]
    gap = lon[0] + 360.0 - lon[-1]
    edge = lat[-1] + (180.0 - lon[-1]) / gap * (lat[0] - lat[-1]) if gap > 0 else lat[0]
    pole = -90.0 if lat.mean() < 0 else 90.0
    ring = [(-180.0, edge), *zip(lon.tolist(), lat.tolist(), strict=True)]
    ring += [(180.0, edge), (180.0, pole), (-180.0, pole)]
    return Polygon(ring)


def _polygons(geometry: BaseGeometry) -> list[Polygon]:
    if isinstance(geometry, Polygon):
        return [geometry]
    return [g for g in getattr(geometry, "geoms", []) if isinstance(g, Polygon)]
