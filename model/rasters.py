"""Georeferenced rasters cut into scenes: a GeoTIFF (or any raster GDAL reads, with a CRS)
becomes an archive folder of 8-bit RGB tiles, each with its footprint in WGS84.

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
- No-data comes from the raster's mask (its nodata value, internal mask or alpha band, as
  GDAL's dataset mask): a tile with more than `max_nodata` of its pixels missing is skipped;
  the missing pixels of a kept tile are black.
- Footprints: each tile's outline (its edges densified, then simplified back to the corners
  where the edges stay straight) through the raster's transform, reprojected to WGS84 with
  pyproj.

Rasters are read window by window, never whole.
"""

from __future__ import annotations

import csv
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import rasterio
import shapely
from pyproj.exceptions import CRSError as ProjCRSError
from pyproj.exceptions import ProjError
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader, MemoryFile
from rasterio.windows import Window
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient

from model.geo import GEO_COLUMNS, SceneGeo
from model.imageio import STRETCH_PERCENTILES, ReadOptions, to_rgb

DEFAULT_TILE_PX = 256
DEFAULT_OUT_SIZE = 256
"""Output side with `tile_m` when `out_size` is not given: the models' input size."""
DEFAULT_MAX_NODATA = 0.5
RASTER_SUFFIXES = (".tif", ".tiff")
"""Files `footprint_of_file` opens; other image files are never georeferenced here."""
LABELS_HEADER = ("image", "scene", "split", *GEO_COLUMNS)
_EDGE_SEGMENTS = 8
_SIMPLIFY_DEG = 1e-9
"""About 0.1 mm: removes the densified points of edges that stay straight in WGS84."""


class RasterError(ValueError):
    """A raster that cannot be tiled (unreadable, no or unusable CRS), or tiling parameters
    that cannot be used."""


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

    @property
    def stem(self) -> str:
        """The raster's file stem: the `scene` of its tiles and their names' prefix."""
        return self.path.stem

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


@dataclass
class RasterTiles:
    """What one raster gave."""

    path: Path
    planned: int
    written: int = 0
    skipped_nodata: int = 0
    seconds: float = 0.0


@dataclass
class TileReport:
    """What `tile_rasters` wrote."""

    out_dir: Path
    rasters: list[RasterTiles] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def written(self) -> int:
        return sum(r.written for r in self.rasters)

    @property
    def skipped_nodata(self) -> int:
        return sum(r.skipped_nodata for r in self.rasters)

    @property
    def tiles_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


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
            f"format GDAL reads ({_gdal_message(exc)})"
        ) from exc
    try:
        yield dataset
    finally:
        dataset.close()


def plan_tiles(
    raster_path: str | Path,
    *,
    tile_px: int | None = None,
    tile_m: float | None = None,
    overlap: float = 0.0,
    out_size: int | None = None,
    bands: Sequence[int] | None = None,
) -> TilePlan:
    """The tiles covering a raster and their footprints.

    `tile_px` (default 256) or `tile_m`, not both; `overlap` is a fraction of the tile side in
    [0, 1); `out_size` defaults to `tile_px`, or 256 with `tile_m`; `bands` are three 1-based
    band numbers (default: 1, 2, 3, or band 1 as grey for rasters of fewer than three bands).
    Partial edge tiles are left out. Raises RasterError for an unreadable raster, one without
    a CRS or with a CRS that cannot be reprojected to WGS84, bad parameters, or a raster
    smaller than one tile."""
    path = Path(raster_path)
    _check_parameters(tile_px, tile_m, overlap, out_size)
    with open_raster(path) as src:
        crs = _crs_of(src, path)
        if tile_m is not None:
            x_m, y_m = _pixel_size_m(src, path)
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
            max(1, round(window[0] * (1.0 - overlap))),
            max(1, round(window[1] * (1.0 - overlap))),
        )
        width, height = src.width, src.height
        if window[0] > width or window[1] > height:
            raise RasterError(
                f"{path}: is {width} x {height} pixels, smaller than one tile of "
                f"{window[0]} x {window[1]} pixels; choose a smaller tile"
            )
        chosen = _bands_of(src.count, bands, path)
        cols = (width - window[0]) // stride[0] + 1
        rows = (height - window[1]) // stride[1] + 1
        windows = [
            (r, c, (c * stride[0], r * stride[1], window[0], window[1]))
            for r in range(rows)
            for c in range(cols)
        ]
        polygons = _footprints(src, crs, [w for _, _, w in windows], path)
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
    _check_fraction("max_nodata", max_nodata, upper_open=False)
    options = ReadOptions(stretch_percentiles=stretch_percentiles)
    with open_raster(plan.path) as src:
        has_mask = _has_mask(src)
        for tile in plan.tiles:
            try:
                image = _read_tile(src, plan, tile, has_mask, max_nodata, options)
            except RasterioError as exc:
                raise RasterError(
                    f"{plan.path}: cannot read the window {tile.window} "
                    f"(col_off,row_off,width,height): the file is damaged or truncated "
                    f"({_gdal_message(exc)})"
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
        crs = _crs_of(src, path)
        (polygon,) = _footprints(src, crs, [(0, 0, src.width, src.height)], path)
        return SceneGeo(polygon, crs=crs.to_string())


def tile_rasters(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    tile_px: int | None = None,
    tile_m: float | None = None,
    overlap: float = 0.0,
    out_size: int | None = None,
    bands: Sequence[int] | None = None,
    max_nodata: float = DEFAULT_MAX_NODATA,
    split: str = "train",
    replace: bool = False,
) -> TileReport:
    """Cut rasters into an archive folder: `out_dir/images/<stem>_<row>_<col>.png` (8-bit RGB
    PNG) and `out_dir/labels.csv` (`image,scene,split` and the geo columns, no labels; the
    scene is the raster's stem), ready for `grn import`.

    All or nothing: every raster is planned (and so checked) first, the archive is written
    into a hidden sibling folder and renamed to `out_dir` at the end, so a failure leaves no
    `out_dir` behind. An existing `out_dir` that is not empty is refused unless `replace`.
    Parameters as `plan_tiles` and `read_tiles`."""
    from model.archive import SPLITS  # here: model.archive reads footprints from this module

    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    if not paths:
        raise RasterError("no rasters given; give one or more GeoTIFF files")
    if split not in SPLITS:
        raise RasterError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    _check_fraction("max_nodata", max_nodata, upper_open=False)
    if out_dir.exists() and not out_dir.is_dir():
        raise RasterError(f"{out_dir} is a file; give a folder for the tiles")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not replace:
        raise RasterError(
            f"{out_dir} already holds files; give a new or empty folder, or replace it"
        )
    stems: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw)
        if path.stem in stems:
            raise RasterError(
                f"{stems[path.stem]} and {path} share the stem {path.stem!r}, which names "
                "their tiles and scene; rename one"
            )
        stems[path.stem] = path
    plans = [
        plan_tiles(p, tile_px=tile_px, tile_m=tile_m, overlap=overlap, out_size=out_size,
                   bands=bands)
        for p in stems.values()
    ]  # fmt: skip
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tiling-", dir=out_dir.parent))
    report = TileReport(out_dir=out_dir)
    try:
        (staging / "images").mkdir()
        with (staging / "labels.csv").open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(LABELS_HEADER)
            for plan in plans:
                report.rasters.append(
                    _write_tiles(plan, staging / "images", writer, split, max_nodata)
                )
        if report.written == 0:
            raise RasterError(
                f"every tile of {', '.join(str(p.path) for p in plans)} is more than "
                f"{max_nodata:.0%} no-data; nothing to write (raise max_nodata?)"
            )
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report.seconds = time.perf_counter() - started
    return report


def _write_tiles(
    plan: TilePlan, images: Path, writer: Any, split: str, max_nodata: float
) -> RasterTiles:
    started = time.perf_counter()
    result = RasterTiles(path=plan.path, planned=len(plan.tiles))
    for image in read_tiles(plan, max_nodata=max_nodata):
        if image.rgb is None:
            result.skipped_nodata += 1
            continue
        name = image.tile.name(plan.stem)
        (images / f"{name}.png").write_bytes(encode_png(image.rgb))
        cells = image.tile.geo.cells()
        writer.writerow([name, plan.stem, split, *(cells[c] for c in GEO_COLUMNS)])
        result.written += 1
    result.seconds = time.perf_counter() - started
    return result


PNG_ZLEVEL = 1
"""zlib's fastest level: encoding took 3.6 of tiling's 3.8 s at the default (6) and 1.3 s at
1, for files 1.9% larger (bench/geo_bench.py, 256 UCM tiles)."""


def encode_png(rgb: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 array as lossless PNG bytes, with no sidecar file."""
    height, width, _ = rgb.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.Env(GDAL_PAM_ENABLED="NO"), MemoryFile() as memory:
            with memory.open(
                driver="PNG",
                width=width,
                height=height,
                count=3,
                dtype="uint8",
                ZLEVEL=PNG_ZLEVEL,
            ) as png:
                png.write(np.moveaxis(rgb, -1, 0))
            return bytes(memory.read())


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Rename the finished folder to `out_dir`, moving away what was there first."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    old = staging.with_name(staging.name + ".old")
    out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _check_parameters(
    tile_px: int | None, tile_m: float | None, overlap: float, out_size: int | None
) -> None:
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
    _check_fraction("overlap", overlap, upper_open=True)


def _check_fraction(name: str, value: float, *, upper_open: bool) -> None:
    inside = 0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0
    if not (math.isfinite(value) and inside):
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise RasterError(f"{name} is a fraction in {interval}; found {value}")


def _crs_of(src: DatasetReader, path: Path) -> Any:
    if src.crs is None:
        raise RasterError(
            f"{path}: has no coordinate reference system; its tiles would have no place on "
            "the Earth. Give it one (gdal_edit.py -a_srs EPSG:xxxx, or a .prj/.aux.xml), or "
            "import its images as plain scenes"
        )
    return src.crs


def _pixel_size_m(src: DatasetReader, path: Path) -> tuple[float, float]:
    """(x, y) pixel size in metres, for rasters in a projected CRS."""
    if not src.crs.is_projected:
        raise RasterError(
            f"{path}: its CRS ({src.crs.to_string()}) is not projected, so its pixels have no "
            "size in metres; give the tile size in pixels (tile_px) instead of tile_m"
        )
    unit = float(src.crs.linear_units_factor[1])
    a, b, _, d, e, _ = tuple(src.transform)[:6]
    return math.hypot(a, d) * unit, math.hypot(b, e) * unit


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


def _has_mask(src: DatasetReader) -> bool:
    """Whether any pixel may be missing: a nodata value, an internal mask or an alpha band."""
    return any(flags != [MaskFlags.all_valid] for flags in src.mask_flag_enums)


def _footprints(
    src: DatasetReader, crs: Any, windows: Sequence[tuple[int, int, int, int]], path: Path
) -> list[Polygon]:
    """Each window's outline in WGS84: its edges densified, reprojected, then simplified."""
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
    polygons = []
    for ring_lon, ring_lat in zip(lon, lat, strict=True):
        if ring_lon.max() - ring_lon.min() > 180.0:
            raise RasterError(
                f"{path}: a tile crosses the antimeridian (longitude 180); cut the raster "
                "there first"
            )
        polygon = Polygon(np.stack([ring_lon, ring_lat], 1))
        polygons.append(orient(shapely.simplify(polygon, _SIMPLIFY_DEG), 1.0))
    return polygons


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _gdal_message(exc: BaseException) -> str:
    """rasterio's message, or GDAL's own where rasterio only points at it."""
    cause = exc.__cause__
    if cause is not None and "previous exception" in str(exc):
        text = cause.args[2] if len(cause.args) == 3 else str(cause)
        return str(text).strip()
    return str(exc).strip() or type(exc).__name__
