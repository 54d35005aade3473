"""Georeferenced test mosaics made of real UCM pixels: N x M UCM scenes (256 x 256 each) laid
side by side in a GeoTIFF with a known UTM transform (EPSG:32611, 0.3 m per pixel, UCM's own
resolution), so that a test knows which scene every tile should hold and where on the Earth
each tile lies.

Variants (`kind`): `rgb8` (the scenes' pixels as they are), `u16` (16-bit: each value
v stored as v * 50 + 1000), `4band` (8-bit RGB plus a NIR-like fourth band); `cog=True`
writes a Cloud Optimized GeoTIFF; `nodata_border=N` adds an N-pixel frame of no-data
around the scenes: the nodata value 0 for 16-bit data, an internal mask for 8-bit data (whose
scenes hold real black pixels).

    python tests/geodata.py OUT_DIR   # writes one mosaic of each kind into OUT_DIR
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import rasterio
import rasterio.shutil
from rasterio.io import MemoryFile
from rasterio.transform import Affine
from sqlalchemy import Connection, text

if __name__ == "__main__":  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.mosaic import square_scenes
from model.imageio import read_image
from service.storage.dialects import postgis_schema

SCENE_PX = 256
PIXEL_M = 0.3
EPSG = 32611
ORIGIN = (500_000.0, 3_760_000.0)
"""Easting and northing of the mosaic's top-left corner (its border's, when it has one):
UTM zone 11N's central meridian, near Los Angeles."""
NODATA = 0
KINDS = ("rgb8", "u16", "4band")
U16_SCALE, U16_OFFSET = 50, 1000

REPO = Path(__file__).resolve().parents[1]
UCM = REPO.parent / "shared" / "datasets" / "ucm-multilabel"


@dataclass(frozen=True)
class Mosaic:
    path: Path
    grid: tuple[int, int]
    """(rows, cols) of scenes."""
    scenes: dict[tuple[int, int], str]
    """The UCM image stem at each (row, col) of the grid."""
    pixels: dict[tuple[int, int], np.ndarray]
    """Each cell's 8-bit RGB pixels as UCM has them."""
    transform: Affine
    crs: str
    border: int
    kind: str

    def cell_offset(self, row: int, col: int) -> tuple[int, int]:
        """(col_off, row_off) in the raster's pixels of the scene at grid cell (row, col)."""
        return self.border + col * SCENE_PX, self.border + row * SCENE_PX

    def utm(self, col: float, row: float) -> tuple[float, float]:
        """(easting, northing) of a raster pixel corner."""
        x, y = self.transform @ (col, row)
        return float(x), float(y)


def ucm_scenes(root: Path = UCM, count: int = 9, seed: int = 0) -> list[Path]:
    """`count` UCM scene files of exactly 256 x 256 pixels from different scene folders,
    chosen reproducibly (as the geo benchmark's mosaic chooses them)."""
    return square_scenes(root, count, seed)


def make_mosaic(
    path: str | Path,
    scenes: list[Path],
    grid: tuple[int, int] = (2, 3),
    kind: str = "rgb8",
    cog: bool = False,
    nodata_border: int = 0,
    origin: tuple[float, float] = ORIGIN,
    tags: dict[str, dict[str, str]] | None = None,
) -> Mosaic:
    """Write `grid` rows x cols of the given 256 x 256 scenes (row by row) into a GeoTIFF;
    `tags`: metadata items by GDAL domain ("" the default one), such as the acquisition
    date."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; found {kind!r}")
    rows, cols = grid
    if len(scenes) < rows * cols:
        raise ValueError(f"a {rows} x {cols} mosaic needs {rows * cols} scenes; {len(scenes)}")
    path = Path(path)
    height, width = rows * SCENE_PX + 2 * nodata_border, cols * SCENE_PX + 2 * nodata_border
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    placed: dict[tuple[int, int], str] = {}
    pixels: dict[tuple[int, int], np.ndarray] = {}
    for i, scene in enumerate(scenes[: rows * cols]):
        r, c = divmod(i, cols)
        image = read_image(scene)
        if image.shape != (SCENE_PX, SCENE_PX, 3):
            raise ValueError(f"{scene} is {image.shape[:2]}, not {SCENE_PX} x {SCENE_PX}")
        top, left = nodata_border + r * SCENE_PX, nodata_border + c * SCENE_PX
        rgb[top : top + SCENE_PX, left : left + SCENE_PX] = image
        placed[(r, c)] = scene.stem
        pixels[(r, c)] = image
    data = _bands(rgb, kind)
    inside = np.zeros((height, width), dtype=bool)
    inside[nodata_border : height - nodata_border, nodata_border : width - nodata_border] = True
    data[:, ~inside] = NODATA
    # 8-bit scenes hold real black pixels, so their frame is marked by an internal mask;
    # 16-bit values start at U16_OFFSET, so there the frame is the nodata value.
    masked = bool(nodata_border) and data.dtype == np.uint8
    transform = Affine(PIXEL_M, 0.0, origin[0], 0.0, -PIXEL_M, origin[1])
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": data.shape[0],
        "dtype": data.dtype.name, "crs": f"EPSG:{EPSG}", "transform": transform,
        "nodata": NODATA if nodata_border and not masked else None, "tiled": True,
        "blockxsize": 256, "blockysize": 256, "compress": "deflate",
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    if cog:
        with MemoryFile() as memory:
            with memory.open(**profile) as dst:
                dst.write(data)
                _tag(dst, tags)
                if masked:
                    dst.write_mask(inside)
            with memory.open() as src:
                rasterio.shutil.copy(src, path, driver="COG", blocksize=256, compress="deflate")
    else:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            _tag(dst, tags)
            if masked:
                dst.write_mask(inside)
    return Mosaic(path, grid, placed, pixels, transform, f"EPSG:{EPSG}", nodata_border, kind)


def _tag(dst: Any, tags: dict[str, dict[str, str]] | None) -> None:
    for domain, items in (tags or {}).items():
        dst.update_tags(ns=domain or None, **items)


def _bands(rgb: np.ndarray, kind: str) -> np.ndarray:
    """(bands, H, W) in the kind's data type."""
    bands = np.moveaxis(rgb, -1, 0)
    if kind == "u16":
        return (bands.astype(np.uint16) * U16_SCALE + U16_OFFSET).astype(np.uint16)
    if kind == "4band":
        red, green = bands[0].astype(np.float64), bands[1].astype(np.float64)
        # Vegetation is bright in the near infrared: a band that follows green and not red.
        nir = np.clip(1.4 * green - 0.5 * red + 40.0, 1, 255).astype(np.uint8)
        return np.concatenate([bands, nir[None]])
    return np.ascontiguousarray(bands)


def write_set(out_dir: Path, root: Path = UCM) -> list[Mosaic]:
    """One 2 x 3 mosaic of each kind, a COG and one with a 256-pixel no-data frame."""
    scenes = ucm_scenes(root, 6)
    return [
        *(make_mosaic(out_dir / f"mosaic_{kind}.tif", scenes, kind=kind) for kind in KINDS),
        make_mosaic(out_dir / "mosaic_cog.tif", scenes, cog=True),
        make_mosaic(out_dir / "mosaic_border.tif", scenes, nodata_border=SCENE_PX),
    ]


# Rasters where longitude wraps (issue 42): across the antimeridian near Fiji, round the pole.
FIJI = (180.0, -17.8)
FAR_PIXEL_M = 10.0


def write_raster(path: Path, crs: str, centre_xy: tuple[float, float], scenes: list[Path]) -> Path:
    """A 512 x 512 GeoTIFF of four UCM scenes (2 x 2) centred on `centre_xy` in `crs`."""
    rgb = np.zeros((512, 512, 3), np.uint8)
    for i, scene in enumerate(scenes[:4]):
        r, c = divmod(i, 2)
        rgb[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256] = read_image(scene)
    x, y = centre_xy
    transform = Affine(
        FAR_PIXEL_M, 0, x - 256 * FAR_PIXEL_M, 0, -FAR_PIXEL_M, y + 256 * FAR_PIXEL_M
    )
    profile = {"driver": "GTiff", "width": 512, "height": 512, "count": 3, "dtype": "uint8"}
    with rasterio.open(path, "w", crs=crs, transform=transform, **profile) as dst:
        dst.write(np.moveaxis(rgb, -1, 0))
    return path


def fiji_raster(folder: Path, scenes: list[Path]) -> Path:
    """`folder/fiji.tif`: UTM zone 60S (EPSG:32760), centred on lon 180 near Fiji."""
    xy = pyproj.Transformer.from_crs(4326, 32760, always_xy=True).transform(*FIJI)
    return write_raster(folder / "fiji.tif", "EPSG:32760", xy, scenes)


def pole_raster(folder: Path, scenes: list[Path]) -> Path:
    """`folder/pole.tif`: Antarctic polar stereographic (EPSG:3031), centred on the pole."""
    return write_raster(folder / "pole.tif", "EPSG:3031", (0.0, 0.0), scenes)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("geodata")
    for mosaic in write_set(target):
        print(f"{mosaic.path}: {mosaic.grid[0]} x {mosaic.grid[1]} scenes, {mosaic.kind}")


def valid_postgis_footprints(connection: Connection) -> int | None:
    """How many stored footprints PostGIS holds as valid geometries; None without PostGIS."""
    gis = postgis_schema(connection)
    if gis is None:
        return None
    query = f"SELECT count(*) FROM scene_footprints WHERE {gis}.ST_IsValid(geom)"
    return int(connection.execute(text(query)).scalar_one())
