"""Regions and match maps: search by a box drawn on the query image, and where in a hit
the query matches.

A region is a pixel box [x0, y0, x1, y1] of the query image (an upload, or an archive
scene's image): the query is that crop, through the same network as any image (resized as
any image is), so it works on every model file and on the serving image's ONNX graph alike.

A match map says where in a hit the query matches: the hit's image cut into a grid of
`rows` x `cols` cells, each cell's window (two cells wide and high, centred on the cell and
moved inside the image; half the image's side at the default 4 x 4) embedded in one batch,
and each window's cosine similarity to the query's embedding. Windows of one cell (a
quarter of the side) were too little of a scene for a network trained on whole scenes;
windows of two cells still tell the left half from the right and cost the same batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from model.imageio import decode_image
from service.storage.catalog import Catalog

MIN_SIDE = 16
"""A region's width and height in pixels, at least."""
GRID = 4
"""A match map's cells per side by default."""
MIN_GRID, MAX_GRID = 3, 8
MAX_MATCH_MAPS = 10
"""Match maps are computed for at most this many hits of a page (each costs a batch of
`grid` x `grid` windows through the network); a page asked for with more is a 422."""


class RegionError(ValueError):
    """A region that does not fit its image: outside it, or too small (HTTP 422)."""

    @property
    def details(self) -> list[dict[str, object]]:
        """The one 422 body's `details`, as a field the request gave wrongly."""
        return [{"loc": ["body", "region"], "msg": str(self), "type": "value_error"}]


@dataclass(frozen=True)
class Region:
    """A pixel box of an image: columns x0 to x1 and rows y0 to y1, the ends excluded."""

    x0: int
    y0: int
    x1: int
    y1: int

    @classmethod
    def of(cls, box: Sequence[int]) -> Region:
        """[x0, y0, x1, y1] as a region, its own shape checked (`check` fits it to an
        image)."""
        if len(box) != 4:
            raise RegionError(f"a region is four integers x0,y0,x1,y1, got {len(box)}")
        region = cls(*(int(value) for value in box))
        if region.x0 < 0 or region.y0 < 0:
            raise RegionError(f"region {region}: x0 and y0 must be 0 or more")
        if region.width < MIN_SIDE or region.height < MIN_SIDE:
            raise RegionError(
                f"region {region} is {region.width} x {region.height} px: each side must be at "
                f"least {MIN_SIDE} px (x1 - x0 and y1 - y0)"
            )
        return region

    @classmethod
    def parse(cls, text: str) -> Region:
        """ "x0,y0,x1,y1" as a region (the form field, the query string, `grn search`)."""
        try:
            return cls.of([int(part) for part in text.split(",")])
        except ValueError as exc:
            if isinstance(exc, RegionError):
                raise
            raise RegionError(f"a region is four integers x0,y0,x1,y1, got {text!r}") from exc

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def __str__(self) -> str:
        return f"{self.x0},{self.y0},{self.x1},{self.y1}"

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The region's pixels of an (H, W, C) image; RegionError when it does not lie inside
        the image."""
        height, width = image.shape[:2]
        if self.x1 > width or self.y1 > height:
            raise RegionError(
                f"region {self} lies outside the {width} x {height} px image: x1 must be at most "
                f"{width} and y1 at most {height}"
            )
        return np.ascontiguousarray(image[self.y0 : self.y1, self.x0 : self.x1])


def cropped(image: np.ndarray, region: Region | None) -> np.ndarray:
    """The image, or its region when one is given."""
    return image if region is None else region.crop(image)


@dataclass(frozen=True)
class MatchMap:
    """Where a hit matches the query: `values[row][col]`, the cosine similarity between the
    query and the window centred on that cell of the hit's image (rows top first)."""

    rows: int
    cols: int
    width: int
    """The hit image's width in pixels (the cells split it evenly)."""
    height: int
    window_width: int
    """Each window's size in pixels (two cells, at most the image)."""
    window_height: int
    values: list[list[float]]


def _starts(size: int, cells: int) -> tuple[list[int], int]:
    """Where each cell's window starts along one side of `size` pixels, and its length:
    two cells long, centred on its cell, moved inside the image."""
    window = min(size, max(1, round(2 * size / cells)))
    starts = []
    for cell in range(cells):
        centre = (cell + 0.5) * size / cells
        starts.append(int(min(max(round(centre - window / 2), 0), size - window)))
    return starts, window


def windows(image: np.ndarray, grid: int = GRID) -> tuple[list[np.ndarray], MatchMap]:
    """The grid's windows of an (H, W, C) image, row by row, and the empty map they fill
    (`match_map`)."""
    if not MIN_GRID <= grid <= MAX_GRID:
        raise ValueError(f"a match map's grid is {MIN_GRID} to {MAX_GRID} cells, got {grid}")
    height, width = image.shape[:2]
    xs, window_width = _starts(width, grid)
    ys, window_height = _starts(height, grid)
    crops = [
        np.ascontiguousarray(image[y : y + window_height, x : x + window_width])
        for y in ys
        for x in xs
    ]
    shape = MatchMap(grid, grid, width, height, window_width, window_height, [])
    return crops, shape


def match_map(query: np.ndarray, embedded: np.ndarray, shape: MatchMap) -> MatchMap:
    """`shape` (from `windows`) filled with each window's cosine similarity to the query:
    `query` a (D,) embedding, `embedded` the windows' (rows * cols, D) embeddings (both unit
    vectors, as the network gives them)."""
    similarity = np.asarray(embedded, dtype=np.float32) @ np.asarray(query, dtype=np.float32)
    grid = similarity.reshape(shape.rows, shape.cols)
    return replace(shape, values=[[round(float(value), 4) for value in row] for row in grid])


def all_windows(
    images: Sequence[np.ndarray], grid: int = GRID
) -> tuple[list[np.ndarray], list[MatchMap]]:
    """The windows of every image (`windows`) in one list, for one pass through the
    network, and each image's empty map."""
    crops: list[np.ndarray] = []
    shapes: list[MatchMap] = []
    for image in images:
        cut, shape = windows(image, grid)
        crops += cut
        shapes.append(shape)
    return crops, shapes


def match_maps(
    query: np.ndarray, embedded: np.ndarray, shapes: Sequence[MatchMap]
) -> list[MatchMap]:
    """Each image's map (`match_map`) from the embeddings of `all_windows`' crops."""
    maps, start = [], 0
    for shape in shapes:
        cells = shape.rows * shape.cols
        maps.append(match_map(query, embedded[start : start + cells], shape))
        start += cells
    return maps


def scene_pixels(catalog: Catalog, scene_id: int) -> np.ndarray:
    """An archive scene's image, decoded (blocking: it reads the file)."""
    path = catalog.image_path(catalog.scene(scene_id))
    return decode_image(path.read_bytes(), path.name)
