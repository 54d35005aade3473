"""Georeferenced rasters cut into tiles: the plan of a raster's windows and their footprints
(`plan_tiles`), and the tiles read as 8-bit RGB (`read_tiles`).

- A tile is `tile_px` source pixels a side, or `tile_m` metres on the ground (`tile_m` /
  pixel size source pixels, resampled to `out_size` pixels: averaged when shrinking,
  bilinear when enlarging).
- `overlap` is a fraction of the tile side in [0, 1): neighbouring tiles start
  `tile * (1 - overlap)` source pixels apart (0.5: each tile shares half its width with the
  next).
- Partial edge tiles are skipped: the strip along the right and bottom edges narrower than a
  tile is not covered, so every tile has the same size on the ground and no padding (which
  would read as content) enters the model. Choose `overlap` or a tile size that divides the
  raster to cover it all.
- Bands are numbered from 1, as GDAL does: `bands=(4, 3, 2)` gives false colour; by default
  1, 2, 3 for rasters of three bands or more, band 1 replicated to grey otherwise. Data that
  is not 8-bit is stretched per tile as `model.imageio` stretches a single image
  (`percentile_stretch`), no-data pixels left out of the percentiles.
- A tile with more than `max_nodata` of its pixels missing (`model.rasters`' mask) is
  skipped; the missing pixels of a kept tile are black.

Rasters are read window by window, never whole.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from model.geo import SceneGeo
from model.imageio import STRETCH_PERCENTILES, ReadOptions, to_rgb
from model.rasters import (
    RasterError,
    crs_of,
    footprints,
    gdal_message,
    has_nodata,
    open_raster,
    pixel_size_m,
)

DEFAULT_TILE_PX = 256
DEFAULT_OUT_SIZE = 256
"""Output side with `tile_m` when `out_size` is not given: the models' input size."""
DEFAULT_MAX_NODATA = 0.5


@dataclass(frozen=True)
class Tile:
    """One window of a tiling plan."""

    row: int
    """Position in the plan's grid (0 at the top)."""
    col: int
    window: tuple[int, int, int, int]
    """(col_off, row_off, width, height) in the raster's pixels."""
    geo: SceneGeo
    """Its footprint in WGS84, the raster's CRS, file name and window."""

    def name(self, stem: str) -> str:
        """The image stem of this tile in an archive: `<stem>_<row>_<col>`."""
        return f"{stem}_{self.row}_{self.col}"


@dataclass(frozen=True)
class TilePlan:
    """How one raster is cut: its windows, the bands read and the output size."""

    path: Path
    crs: str
    """The raster's CRS, `EPSG:xxxx` where it has a code, WKT otherwise."""
    width: int
    height: int
    band_count: int
    dtype: str
    bands: tuple[int, int, int]
    """1-based band numbers read as R, G, B."""
    window_px: tuple[int, int]
    """(width, height) of a tile in source pixels."""
    stride_px: tuple[int, int]
    """(x, y) distance between neighbouring tiles in source pixels."""
    out_size: int
    """Side of a tile image in pixels."""
    tiles: tuple[Tile, ...]
    name: str | None = None
    """What names its tiles when not the file's stem (a STAC item's id)."""

    @property
    def stem(self) -> str:
        """The `scene` of its tiles and their names' prefix: `name`, else the raster's file
        stem."""
        return self.name or self.path.stem

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of tiles."""
        if not self.tiles:
            return 0, 0
        return self.tiles[-1].row + 1, self.tiles[-1].col + 1


@dataclass(frozen=True)
class TileImage:
    """A tile read from its raster: the pixels, or None when it is skipped for no-data."""

    tile: Tile
    rgb: np.ndarray | None
    """(out_size, out_size, 3) uint8."""
    nodata_fraction: float


@dataclass(frozen=True)
class TileGrid:
    """How a raster is cut, the same for every raster of a run (`plan_tiles`,
    `model.tile_archive.tile_rasters`, `grn tile`'s options).

    `tile_px` (default 256) or `tile_m`, not both; `overlap` is a fraction of the tile side in
    [0, 1); `out_size` defaults to `tile_px`, or 256 with `tile_m`; `bands` are three 1-based
    band numbers (default: 1, 2, 3, or band 1 as grey for rasters of fewer than three
    bands)."""

    tile_px: int | None = None
    tile_m: float | None = None
    overlap: float = 0.0
    out_size: int | None = None
    bands: Sequence[int] | None = None


DEFAULT_GRID = TileGrid()


def plan_tiles(raster_path: str | Path, grid: TileGrid = DEFAULT_GRID) -> TilePlan:
    """The tiles of `grid` covering a raster, and their footprints. Partial edge tiles are
    left out. Raises RasterError for an unreadable raster, one without a CRS or with a CRS
    that cannot be reprojected to WGS84, bad parameters, or a raster smaller than one
    tile."""
    path = Path(raster_path)
    _check_grid(grid)
    tile_px, tile_m, out_size = grid.tile_px, grid.tile_m, grid.out_size
    with open_raster(path) as src:
        crs = crs_of(src, path)
        if tile_m is not None:
            x_m, y_m = pixel_size_m(src, path)
            window = (round(tile_m / x_m), round(tile_m / y_m))
            if min(window) < 1:
                raise RasterError(
                    f"{path}: tile_m={tile_m} is less than one pixel ({x_m:g} x {y_m:g} m); "
                    "choose a larger tile"
                )
            side = out_size or DEFAULT_OUT_SIZE
        else:
            px = tile_px or DEFAULT_TILE_PX
            window = (px, px)
            side = out_size or px
        stride = (
            max(1, round(window[0] * (1.0 - grid.overlap))),
            max(1, round(window[1] * (1.0 - grid.overlap))),
        )
        width, height = src.width, src.height
        if window[0] > width or window[1] > height:
            raise RasterError(
                f"{path}: is {width} x {height} pixels, smaller than one tile of "
                f"{window[0]} x {window[1]} pixels; choose a smaller tile"
            )
        chosen = _bands_of(src.count, grid.bands, path)
        cols = (width - window[0]) // stride[0] + 1
        rows = (height - window[1]) // stride[1] + 1
        windows = [
            (r, c, (c * stride[0], r * stride[1], window[0], window[1]))
            for r in range(rows)
            for c in range(cols)
        ]
        polygons = footprints(src, crs, [w for _, _, w in windows], path)
        crs_text = crs.to_string()
        tiles = tuple(
            Tile(r, c, w, SceneGeo(polygon, crs=crs_text, source=path.name, window=w))
            for (r, c, w), polygon in zip(windows, polygons, strict=True)
        )
        return TilePlan(
            path=path,
            crs=crs_text,
            width=width,
            height=height,
            band_count=src.count,
            dtype=str(src.dtypes[0]),
            bands=chosen,
            window_px=window,
            stride_px=stride,
            out_size=side,
            tiles=tiles,
        )


def read_tiles(
    plan: TilePlan,
    *,
    max_nodata: float = DEFAULT_MAX_NODATA,
    stretch_percentiles: tuple[float, float] = STRETCH_PERCENTILES,
) -> Iterator[TileImage]:
    """Read a plan's tiles in order, one window at a time, as 8-bit RGB; a tile whose no-data
    fraction exceeds `max_nodata` comes with `rgb=None`. Raises RasterError when a window
    cannot be read (a damaged or truncated file)."""
    check_fraction("max_nodata", max_nodata, upper_open=False)
    options = ReadOptions(stretch_percentiles=stretch_percentiles)
    with open_raster(plan.path) as src:
        has_mask = has_nodata(src)
        for tile in plan.tiles:
            try:
                image = _read_tile(src, plan, tile, has_mask, max_nodata, options)
            except RasterioError as exc:
                raise RasterError(
                    f"{plan.path}: cannot read the window {tile.window} "
                    f"(col_off,row_off,width,height): the file is damaged or truncated "
                    f"({gdal_message(exc)})"
                ) from exc
            yield image


def _read_tile(
    src: DatasetReader,
    plan: TilePlan,
    tile: Tile,
    has_mask: bool,
    max_nodata: float,
    options: ReadOptions,
) -> TileImage:
    side = plan.out_size
    window = Window(*tile.window)
    resize: dict[str, Any] = {}
    if plan.window_px != (side, side):
        shrinking = plan.window_px[0] * plan.window_px[1] > side * side
        resize = {
            "out_shape": (side, side),
            "resampling": Resampling.average if shrinking else Resampling.bilinear,
        }
    valid = None
    if has_mask:
        shape = {"out_shape": resize["out_shape"]} if resize else {}
        mask = src.dataset_mask(window=window, resampling=Resampling.nearest, **shape)
        valid = mask > 0
        missing = 1.0 - float(valid.mean())
        if missing > max_nodata:
            return TileImage(tile, None, missing)
    unique = sorted(set(plan.bands))
    if resize:
        resize = {**resize, "out_shape": (len(unique), side, side)}
    data = src.read(unique, window=window, **resize)
    array = np.moveaxis(data[[unique.index(b) for b in plan.bands]], 0, -1)
    if valid is not None and array.dtype != np.uint8 and not valid.all():
        array = array.astype(np.float64)
        array[~valid] = np.nan  # left out of the stretch's percentiles
    rgb = to_rgb(array, options, str(plan.path))
    if valid is not None:
        rgb[~valid] = 0
        return TileImage(tile, rgb, 1.0 - float(valid.mean()))
    return TileImage(tile, rgb, 0.0)


def _check_grid(grid: TileGrid) -> None:
    tile_px, tile_m, out_size = grid.tile_px, grid.tile_m, grid.out_size
    if tile_px is not None and tile_m is not None:
        raise RasterError("give the tile size in pixels (tile_px) or in metres (tile_m), not both")
    if tile_px is not None and (
        isinstance(tile_px, bool) or int(tile_px) != tile_px or tile_px < 1
    ):
        raise RasterError(f"tile_px must be a positive whole number of pixels; found {tile_px}")
    if tile_m is not None and not (math.isfinite(tile_m) and tile_m > 0):
        raise RasterError(f"tile_m must be a positive number of metres; found {tile_m}")
    if out_size is not None and (int(out_size) != out_size or out_size < 1):
        raise RasterError(f"out_size must be a positive whole number of pixels; found {out_size}")
    check_fraction("overlap", grid.overlap, upper_open=True)


def check_fraction(name: str, value: float, *, upper_open: bool) -> None:
    """RasterError unless `value` is in [0, 1), or with `upper_open=False` in [0, 1]."""
    inside = 0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0
    if not (math.isfinite(value) and inside):
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise RasterError(f"{name} is a fraction in {interval}; found {value}")


def _bands_of(count: int, bands: Sequence[int] | None, path: Path) -> tuple[int, int, int]:
    if bands is None:
        return (1, 2, 3) if count >= 3 else (1, 1, 1)
    chosen = tuple(int(b) for b in bands)
    if len(chosen) == 1:
        chosen = chosen * 3
    if len(chosen) != 3:
        raise RasterError(f"give three band numbers (R, G, B) or one (grey); found {list(bands)}")
    if any(b < 1 or b > count for b in chosen):
        raise RasterError(
            f"{path}: has {count} band{'s' if count != 1 else ''}, numbered 1 to {count}; "
            f"cannot read bands {','.join(map(str, chosen))}"
        )
    return chosen
