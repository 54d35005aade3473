"""Where a scene lies on the Earth: its footprint in WGS84 longitude/latitude, and, for a scene
cut from a georeferenced raster, the raster, the pixel window and the raster's CRS.

An archive's `labels.csv` may carry these in optional columns after `image,scene,split`
(`GEO_COLUMNS`, any subset, in any order, before the label columns):

- `footprint`: a GeoJSON geometry (Polygon, MultiPolygon or Point) in WGS84, as JSON text;
  one across the antimeridian is a MultiPolygon split at longitude 180 (RFC 7946), one around
  a pole a Polygon along all longitudes down to the pole (`model.lonlat`);
- `lon`, `lat`: a point, when there is no footprint;
- `crs`: the source raster's coordinate reference system (for example `EPSG:32611`);
- `source`: the raster the scene was cut from;
- `window`: its pixel window there, `col_off,row_off,width,height`.

Empty cells mean "not known". A scene that is a GeoTIFF of its own keeps its georeferencing
without any column (`model.rasters`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon, box, mapping, shape

from model.lonlat import around_pole, place_of, unwrapped

GEO_COLUMNS = ("footprint", "lon", "lat", "crs", "source", "window")
EARTH_RADIUS_M = 6_371_008.8
"""The mean Earth radius (IUGG), for great-circle distances."""


class GeoError(ValueError):
    """A footprint, box, polygon or point that cannot be used as given."""


@dataclass(frozen=True)
class SceneGeo:
    footprint: Polygon | MultiPolygon | Point
    """WGS84, x = longitude, y = latitude."""
    crs: str | None = None
    """The source raster's CRS, as text (`EPSG:32611`, or WKT when it has no code)."""
    source: str | None = None
    """The raster file the scene was cut from."""
    window: tuple[int, int, int, int] | None = None
    """(col_off, row_off, width, height) in the source raster's pixels."""

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(min_lon, min_lat, max_lon, max_lat), unwrapped (`model.lonlat`): max_lon past 180
        across the antimeridian, all longitudes around a pole."""
        return place_of(self.footprint)[0]

    @property
    def centre(self) -> tuple[float, float]:
        """(lon, lat) of the footprint's centroid (across the antimeridian and around a pole,
        as `model.lonlat.place_of` finds it)."""
        return place_of(self.footprint)[1]

    def geojson(self) -> dict[str, Any]:
        return mapping(self.footprint)

    def cells(self) -> dict[str, str]:
        """This footprint as `labels.csv` cells (`GEO_COLUMNS`)."""
        lon, lat = self.centre
        return {
            "footprint": json.dumps(self.geojson(), separators=(",", ":")),
            "lon": f"{lon:.8f}",
            "lat": f"{lat:.8f}",
            "crs": self.crs or "",
            "source": self.source or "",
            "window": ",".join(str(v) for v in self.window) if self.window else "",
        }

    @classmethod
    def from_cells(cls, cells: Mapping[str, str], where: str) -> SceneGeo | None:
        """The footprint a `labels.csv` row gives (None when its geo cells are all empty)."""
        text = {k: (cells.get(k) or "").strip() for k in GEO_COLUMNS}
        if not any(text.values()):
            return None
        if text["footprint"]:
            try:
                footprint = geometry_from_geojson(json.loads(text["footprint"]))
            except (json.JSONDecodeError, GeoError) as exc:
                raise GeoError(f"{where}: footprint: {exc}") from exc
        elif text["lon"] and text["lat"]:
            try:
                footprint = Point(_lon_lat(float(text["lon"]), float(text["lat"])))
            except (ValueError, GeoError) as exc:
                raise GeoError(f"{where}: lon/lat: {exc}") from exc
        elif text["lon"] or text["lat"]:
            raise GeoError(f"{where}: give both lon and lat, or a footprint")
        else:
            raise GeoError(
                f"{where}: crs, source or window without a footprint or lon/lat; give the "
                "scene's footprint (GeoJSON in WGS84) or its lon and lat"
            )
        window = None
        if text["window"]:
            try:
                window = tuple(int(v) for v in text["window"].split(","))
            except ValueError:
                window = ()
            if len(window) != 4:
                raise GeoError(
                    f"{where}: window must be col_off,row_off,width,height; found "
                    f"{text['window']!r}"
                )
        return cls(footprint, text["crs"] or None, text["source"] or None, window)  # type: ignore[arg-type]

    def to_json(self) -> str:
        """The stored form (SQL's `scene_footprints.geometry` holds the GeoJSON alone)."""
        return json.dumps(self.geojson(), separators=(",", ":"))


def _lon_lat(lon: float, lat: float) -> tuple[float, float]:
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise GeoError(f"coordinates must be finite numbers; found {lon}, {lat}")
    if not -180.0 <= lon <= 180.0 or not -90.0 <= lat <= 90.0:
        which = f"longitude {lon}" if not -180.0 <= lon <= 180.0 else f"latitude {lat}"
        raise GeoError(
            f"({lon}, {lat}) is not a WGS84 longitude/latitude: its {which} is out of range "
            "(longitude in [-180, 180], latitude in [-90, 90]; coordinates are lon, lat in "
            "that order)"
        )
    return lon, lat


def geometry_from_geojson(value: Any) -> Polygon | MultiPolygon | Point:
    """A WGS84 Polygon, MultiPolygon or Point from a GeoJSON geometry (or a Feature holding
    one), checked: coordinates in range, each polygon valid and not crossing the antimeridian
    as drawn (split at 180 instead, RFC 7946) unless it goes round a pole."""
    if isinstance(value, dict) and value.get("type") == "Feature":
        value = value.get("geometry")
    if not isinstance(value, dict) or value.get("type") not in ("Polygon", "MultiPolygon", "Point"):
        kind = value.get("type") if isinstance(value, dict) else type(value).__name__
        raise GeoError(f"expected a GeoJSON Polygon, MultiPolygon or Point; found {kind}")
    try:
        geometry = shape(value)
    except Exception as exc:  # shapely raises several types for malformed coordinates
        raise GeoError(f"malformed GeoJSON {value['type']}: {exc}") from exc
    if geometry.is_empty:
        raise GeoError(f"the {value['type']} is empty")
    for lon, lat in np.asarray(shapely.get_coordinates(geometry)):
        _lon_lat(float(lon), float(lat))
    if isinstance(geometry, Polygon | MultiPolygon):
        if not geometry.is_valid:
            raise GeoError(f"the polygon is not valid: {shapely.is_valid_reason(geometry)}")
        parts = geometry.geoms if isinstance(geometry, MultiPolygon) else [geometry]
        for part in parts:
            min_lon, _, max_lon, _ = part.bounds
            if max_lon - min_lon > 180.0 and not around_pole(part):
                raise GeoError(
                    "the polygon spans more than 180 degrees of longitude, so it crosses the "
                    "antimeridian as drawn; split it in two at longitude 180 (a MultiPolygon)"
                )
    return geometry


def polygon_from_geojson(value: Any) -> Polygon | MultiPolygon:
    """A WGS84 Polygon or MultiPolygon from GeoJSON, checked as `geometry_from_geojson`
    checks it; a Point is refused (`within` takes an area)."""
    geometry = geometry_from_geojson(value)
    if not isinstance(geometry, Polygon | MultiPolygon):
        raise GeoError(f"expected a GeoJSON Polygon or MultiPolygon; found a {geometry.geom_type}")
    return geometry


def parse_bbox(text: str | Sequence[float]) -> tuple[float, float, float, float]:
    """`min_lon,min_lat,max_lon,max_lat` (WGS84), checked; a west (min_lon) greater than the
    east is a box across the antimeridian (RFC 7946, STAC) and kept as given."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = [float(v) for v in parts]
    except ValueError as exc:
        raise GeoError(
            f"bbox must be four numbers, min_lon,min_lat,max_lon,max_lat; {exc}"
        ) from exc
    if len(values) != 4:
        raise GeoError(
            f"bbox must be four numbers, min_lon,min_lat,max_lon,max_lat; found {len(values)}"
        )
    min_lon, min_lat, max_lon, max_lat = values
    _lon_lat(min_lon, min_lat)
    _lon_lat(max_lon, max_lat)
    if min_lat > max_lat:
        raise GeoError(
            f"bbox {min_lon},{min_lat},{max_lon},{max_lat} has a latitude minimum above its "
            "maximum; the order is min_lon,min_lat,max_lon,max_lat (a west above the east is "
            "a box across the antimeridian)"
        )
    return min_lon, min_lat, max_lon, max_lat


def parse_near(text: str | Sequence[float]) -> tuple[float, float, float]:
    """`lon,lat,radius_m`, checked."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = [float(v) for v in parts]
    except ValueError as exc:
        raise GeoError(f"near must be lon,lat,radius_m; {exc}") from exc
    if len(values) != 3:
        raise GeoError(f"near must be three numbers, lon,lat,radius_m; found {len(values)}")
    lon, lat, radius = values
    _lon_lat(lon, lat)
    if not (math.isfinite(radius) and radius > 0):
        raise GeoError(f"near's radius must be a positive number of metres; found {radius}")
    return lon, lat, radius


def box_polygon(bounds: Sequence[float]) -> Polygon:
    return box(*bounds)


def haversine_m(lon: np.ndarray, lat: np.ndarray, lon0: float, lat0: float) -> np.ndarray:
    """Great-circle distances in metres from (lon0, lat0) to each (lon, lat)."""
    phi, phi0 = np.radians(lat), math.radians(lat0)
    dphi = phi - phi0
    dlmb = np.radians(lon - lon0)
    a = np.sin(dphi / 2) ** 2 + np.cos(phi) * math.cos(phi0) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def near_bounds(lon: float, lat: float, radius_m: float) -> tuple[float, float, float, float]:
    """The unwrapped box around a circle on the sphere (degrees; `model.lonlat`), for an
    index to narrow a `near` query first: across the antimeridian its east passes 180, and a
    circle holding a pole spans all longitudes."""
    angle = radius_m / EARTH_RADIUS_M
    dlat = math.degrees(angle)
    south, north = lat - dlat, lat + dlat
    cos_lat = math.cos(math.radians(lat))
    if south <= -90.0 or north >= 90.0 or angle >= math.pi / 2 or math.sin(angle) >= cos_lat:
        return -180.0, max(-90.0, south), 180.0, min(90.0, north)
    # the widest longitude of a spherical cap (at least the flat dlat / cos(lat))
    dlon = max(math.degrees(math.asin(math.sin(angle) / cos_lat)), dlat / cos_lat)
    return unwrapped((lon - dlon, south, lon + dlon, north))
