"""A georeferenced raster made of real UCM scenes, for bench/geo_bench.py: rows x cols of
256 x 256 scenes side by side in an 8-bit RGB GeoTIFF (256 px internal tiles, deflate) in
UTM zone 11N at UCM's 0.3 m per pixel, so that every tile `grn tile` cuts holds one known
scene's pixels. The same raster as tests/geodata.py's `rgb8` mosaic, whose other variants
(16-bit, 4-band, COG, a no-data frame) only the tests need.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine

from model.imageio import read_image

SCENE_PX = 256
PIXEL_M = 0.3
CRS = "EPSG:32611"
ORIGIN = (500_000.0, 3_760_000.0)
"""Easting and northing of the top-left corner: zone 11N's central meridian, near LA."""


@dataclass(frozen=True)
class Mosaic:
    path: Path
    scenes: dict[tuple[int, int], str]
    """The UCM image stem at each (row, col) of the grid."""


def square_scenes(archive: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` scene files of exactly SCENE_PX x SCENE_PX from the archive (images/FOLDER/
    STEM.jpg), taken from its folders in turn, in an order drawn with `seed`."""
    stems: dict[str, list[str]] = {}
    with (archive / "labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            stems.setdefault(row["scene"], []).append(row["image"])
    rng = np.random.default_rng(seed)
    folders = sorted(stems)
    rng.shuffle(folders)
    picked: list[Path] = []
    while len(picked) < count:
        for folder in folders:
            for stem in rng.permutation(sorted(stems[folder])):
                path = archive / "images" / folder / f"{stem}.jpg"
                if path not in picked and read_image(path).shape[:2] == (SCENE_PX, SCENE_PX):
                    picked.append(path)
                    break
            if len(picked) == count:
                break
    return picked


def write_mosaic(path: Path, scenes: list[Path], grid: tuple[int, int]) -> Mosaic:
    """The first rows x cols `scenes`, row by row, written as one GeoTIFF at `path`."""
    rows, cols = grid
    if len(scenes) < rows * cols:
        raise ValueError(f"a {rows} x {cols} mosaic needs {rows * cols} scenes; {len(scenes)}")
    pixels = np.zeros((3, rows * SCENE_PX, cols * SCENE_PX), dtype=np.uint8)
    placed = {}
    for n, scene in enumerate(scenes[: rows * cols]):
        row, col = divmod(n, cols)
        image = read_image(scene)
        if image.shape != (SCENE_PX, SCENE_PX, 3):
            raise ValueError(f"{scene} is {image.shape[:2]}, not {SCENE_PX} x {SCENE_PX}")
        top, left = row * SCENE_PX, col * SCENE_PX
        pixels[:, top : top + SCENE_PX, left : left + SCENE_PX] = np.moveaxis(image, -1, 0)
        placed[(row, col)] = scene.stem
    path.parent.mkdir(parents=True, exist_ok=True)
    transform = Affine(PIXEL_M, 0.0, ORIGIN[0], 0.0, -PIXEL_M, ORIGIN[1])
    height, width = pixels.shape[1:]
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8",
        crs=CRS, transform=transform, tiled=True, blockxsize=SCENE_PX, blockysize=SCENE_PX,
        compress="deflate",
    ) as raster:  # fmt: skip
        raster.write(pixels)
    return Mosaic(path, placed)
