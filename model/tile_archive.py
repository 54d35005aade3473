"""Georeferenced rasters cut into an archive folder of 8-bit RGB PNG tiles, each with its
footprint in WGS84 (`tile_rasters`, what `grn tile` runs), ready for `grn import`.

How a raster is cut is `model.tiling`'s.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from dataclasses import replace as replace_field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from model.archive import SPLITS
from model.geo import GEO_COLUMNS
from model.rasters import RasterError
from model.tiling import (
    DEFAULT_GRID,
    DEFAULT_MAX_NODATA,
    TileGrid,
    TilePlan,
    check_fraction,
    plan_tiles,
    read_tiles,
)

LABELS_HEADER = ("image", "scene", "split", *GEO_COLUMNS)


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


def tile_rasters(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    grid: TileGrid = DEFAULT_GRID,
    *,
    max_nodata: float = DEFAULT_MAX_NODATA,
    split: str = "train",
    replace: bool = False,
    names: Sequence[str] | None = None,
) -> TileReport:
    """Cut rasters into an archive folder: `out_dir/images/<stem>_<row>_<col>.png` (8-bit RGB
    PNG) and `out_dir/labels.csv` (`image,scene,split` and the geo columns, no labels; the
    scene is the raster's stem), ready for `grn import`.

    All or nothing: every raster is planned (and so checked) first, the archive is written
    into a hidden sibling folder and renamed to `out_dir` at the end, so a failure leaves no
    `out_dir` behind. An existing `out_dir` that is not empty is refused unless `replace`.
    `grid`: how each raster is cut (`model.tiling.TileGrid`); `max_nodata` as `read_tiles`;
    `names`: what names each raster's tiles and scene instead of its file stem."""
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    if not paths:
        raise RasterError("no rasters given; give one or more GeoTIFF files")
    if split not in SPLITS:
        raise RasterError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    check_fraction("max_nodata", max_nodata, upper_open=False)
    if out_dir.exists() and not out_dir.is_dir():
        raise RasterError(f"{out_dir} is a file; give a folder for the tiles")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not replace:
        raise RasterError(
            f"{out_dir} already holds files; give a new or empty folder, or replace it"
        )
    stems: dict[str, Path] = {}
    for raw, name in zip(paths, names or [Path(p).stem for p in paths], strict=True):
        path = Path(raw)
        if name in stems:
            raise RasterError(
                f"{stems[name]} and {path} share the stem {name!r}, which names "
                "their tiles and scene; rename one"
            )
        stems[name] = path
    plans = [replace_field(plan_tiles(p, grid), name=name) for name, p in stems.items()]
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
