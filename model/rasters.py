"""Georeferenced rasters (a GeoTIFF, or any raster GDAL reads, with a CRS): opening one, its
CRS and pixel size, its no-data mask, and footprints in WGS84.

- No-data comes from the raster's mask (its nodata value, internal mask or alpha band, as
  GDAL's dataset mask).
- Footprints: each window's outline (its edges densified, then simplified back to the corners
  where the edges stay straight) through the raster's transform, reprojected to WGS84 with
  pyproj.

`model.tiling` cuts a raster into tiles, and `model.tile_archive` writes them as an archive.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import rasterio
import shapely
from pyproj.exceptions import CRSError as ProjCRSError
from pyproj.exceptions import ProjError
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.polygon import orient

from model.geo import SceneGeo
from model.lonlat import ring_footprint
from model.times import TimeError, acquired_from_tags

RASTER_SUFFIXES = (".tif", ".tiff")
"""Files `footprint_of_file` opens; other image files are never georeferenced here."""
_EDGE_SEGMENTS = 8
_SIMPLIFY_DEG = 1e-9
"""About 0.1 mm: removes the densified points of edges that stay straight in WGS84."""


class RasterError(ValueError):
    """A raster that cannot be tiled (unreadable, no or unusable CRS), or tiling parameters
    that cannot be used."""


@contextmanager
def open_raster(path: str | Path) -> Iterator[DatasetReader]:
    """Open a raster for reading, any failure as a RasterError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise RasterError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path)
    except RasterioError as exc:
        raise RasterError(
            f"{path}: not a readable raster: the file is damaged, truncated or not an image "
            f"format GDAL reads ({gdal_message(exc)})"
        ) from exc
    try:
        yield dataset
    finally:
        dataset.close()


def footprint_of_file(path: str | Path) -> SceneGeo | None:
    """The footprint of a scene that is a GeoTIFF of its own: its whole extent in WGS84 and
    its CRS. None for a file without a CRS and for other formats (PNG, JPEG); RasterError
    for a GeoTIFF that cannot be read or whose CRS cannot be reprojected to WGS84."""
    path = Path(path)
    if path.suffix.lower() not in RASTER_SUFFIXES:
        return None
    with open_raster(path) as src:
        if src.crs is None:
            return None
        crs = crs_of(src, path)
        (polygon,) = footprints(src, crs, [(0, 0, src.width, src.height)], path)
        return SceneGeo(polygon, crs=crs.to_string())


def acquired_of_file(path: str | Path) -> datetime | None:
    """When a GeoTIFF scene's pixels were taken, from its metadata (ACQUISITIONDATETIME in
    GDAL's IMAGERY domain or the default one, else TIFFTAG_DATETIME); None when it does not
    say and for other formats; RasterError for a date that does not parse."""
    path = Path(path)
    if path.suffix.lower() not in RASTER_SUFFIXES:
        return None
    with open_raster(path) as src:
        tags = {**src.tags(), **src.tags(ns="IMAGERY")}
    try:
        return acquired_from_tags(tags)
    except TimeError as exc:
        raise RasterError(f"{path}: {exc}") from exc


def crs_of(src: DatasetReader, path: Path) -> Any:
    """The raster's CRS; RasterError when it has none."""
    if src.crs is None:
        raise RasterError(
            f"{path}: has no coordinate reference system; its tiles would have no place on "
            "the Earth. Give it one (gdal_edit.py -a_srs EPSG:xxxx, or a .prj/.aux.xml), or "
            "import its images as plain scenes"
        )
    return src.crs


def pixel_size_m(src: DatasetReader, path: Path) -> tuple[float, float]:
    """(x, y) pixel size in metres, for rasters in a projected CRS."""
    if not src.crs.is_projected:
        raise RasterError(
            f"{path}: its CRS ({src.crs.to_string()}) is not projected, so its pixels have no "
            "size in metres; give the tile size in pixels (tile_px) instead of tile_m"
        )
    unit = float(src.crs.linear_units_factor[1])
    a, b, _, d, e, _ = tuple(src.transform)[:6]
    return math.hypot(a, d) * unit, math.hypot(b, e) * unit


def has_nodata(src: DatasetReader) -> bool:
    """Whether any pixel may be missing: a nodata value, an internal mask or an alpha band."""
    return any(flags != [MaskFlags.all_valid] for flags in src.mask_flag_enums)


def footprints(
    src: DatasetReader, crs: Any, windows: Sequence[tuple[int, int, int, int]], path: Path
) -> list[Polygon | MultiPolygon]:
    """Each window's outline in WGS84: its edges densified, reprojected, then simplified; a
    window across the antimeridian as a MultiPolygon split there, one round a pole as the
    pole's cap (`model.lonlat.ring_footprint`). RasterError when the CRS cannot be
    reprojected to WGS84."""
    steps = np.arange(_EDGE_SEGMENTS) / _EDGE_SEGMENTS
    # The ring in unit-square coordinates, clockwise in pixel space from the top left.
    unit = np.concatenate([
        np.stack([steps, np.zeros_like(steps)], 1),
        np.stack([np.ones_like(steps), steps], 1),
        np.stack([1 - steps, np.ones_like(steps)], 1),
        np.stack([np.zeros_like(steps), 1 - steps], 1),
    ])  # fmt: skip
    box = np.asarray(windows, dtype=np.float64)  # (n, 4): col_off, row_off, width, height
    cols = box[:, None, 0] + unit[None, :, 0] * box[:, None, 2]
    rows = box[:, None, 1] + unit[None, :, 1] * box[:, None, 3]
    a, b, c, d, e, f = tuple(src.transform)[:6]
    xs, ys = a * cols + b * rows + c, d * cols + e * rows + f
    try:
        to_wgs84 = pyproj.Transformer.from_crs(
            pyproj.CRS.from_wkt(crs.to_wkt(version="WKT2_2019")), "EPSG:4326", always_xy=True
        )
        lon, lat = to_wgs84.transform(xs.ravel(), ys.ravel(), errcheck=True)
    except (ProjError, ProjCRSError) as exc:
        raise RasterError(
            f"{path}: its CRS ({_short(crs.to_string())}) cannot be reprojected to WGS84 "
            f"longitude/latitude ({exc}); give it a CRS tied to the Earth, such as an EPSG code"
        ) from exc
    lon, lat = np.reshape(lon, xs.shape), np.reshape(lat, ys.shape)
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise RasterError(
            f"{path}: some of its pixels fall outside what its CRS ({_short(crs.to_string())}) "
            "can reproject to WGS84"
        )
    polygons: list[Polygon | MultiPolygon] = []
    for ring_lon, ring_lat in zip(lon, lat, strict=True):
        wrapped = ring_footprint(ring_lon, ring_lat)
        if wrapped is None:  # everywhere else
            polygon = Polygon(np.stack([ring_lon, ring_lat], 1))
            polygons.append(orient(shapely.simplify(polygon, _SIMPLIFY_DEG), 1.0))
        elif isinstance(wrapped, MultiPolygon):
            parts = [orient(shapely.simplify(p, _SIMPLIFY_DEG), 1.0) for p in wrapped.geoms]
            polygons.append(MultiPolygon(parts))
        else:
            polygons.append(orient(shapely.simplify(wrapped, _SIMPLIFY_DEG), 1.0))
    return polygons


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def gdal_message(exc: BaseException) -> str:
    """rasterio's message, or GDAL's own where rasterio only points at it."""
    cause = exc.__cause__
    if cause is not None and "previous exception" in str(exc):
        text = cause.args[2] if len(cause.args) == 3 else str(cause)
        return str(text).strip()
    return str(exc).strip() or type(exc).__name__
