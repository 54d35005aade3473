"""Where else a pattern occurs: a search's top hits counted per grid cell or per source
raster (`POST /search/density`), from the footprints in the catalog's arrays."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.lonlat import rfc7946
from service.storage.scene_table import SceneTable
from service.usecases.search import RankedScene

DEGREE_M = 111_320.0
"""Metres per degree of latitude (and of longitude at the equator), near enough for grids."""


@dataclass(frozen=True)
class DensityCell:
    """One area's share of a search's top hits: a grid cell or a source raster."""

    key: str
    count: int
    mean_score: float
    best_score: float
    best_id: int
    bounds: tuple[float, float, float, float]
    """The cell's box (grid), or the box around its hits' footprints (source); west above
    east across the antimeridian (RFC 7946)."""


def hit_density(
    table: SceneTable,
    hits: Sequence[RankedScene],
    *,
    by: str = "grid",
    cell_m: float = 1000.0,
    sources: dict[int, str | None] | None = None,
) -> list[DensityCell]:
    """Where a search's hits lie: their count per grid cell of about `cell_m` metres (a
    degree grid whose longitude step widens with the hits' mean latitude, so cells are
    square on the ground there), or per source raster (`sources`: each hit's), most hits
    first. Hits without a footprint are left out."""
    ids = np.asarray([hit.scene.id for hit in hits], dtype=np.int64)
    scores = np.asarray([hit.score for hit in hits], dtype=np.float64)
    rows = table.positions(ids)
    known = rows >= 0
    places = np.full((len(ids), 6), np.nan)
    places[known] = table.places[rows[known]]
    placed = ~np.isnan(places[:, 0])
    ids, scores, places = ids[placed], scores[placed], places[placed]
    if not len(ids):
        return []
    if by == "grid":
        dlat = cell_m / DEGREE_M
        dlon = min(360.0, dlat / max(math.cos(math.radians(float(places[:, 5].mean()))), 1e-6))
        cells = np.stack(
            [np.floor(places[:, 4] / dlon), np.floor(places[:, 5] / dlat)], axis=1
        ).astype(np.int64)
        keys = [f"{x},{y}" for x, y in cells.tolist()]
        boxes = {
            key: (x * dlon, y * dlat, (x + 1) * dlon, (y + 1) * dlat)
            for key, (x, y) in zip(keys, cells.tolist(), strict=True)
        }
    elif by == "source":
        found = sources or {}
        keys = [found.get(int(i)) or "(no source)" for i in ids]
        boxes = {}
        for key in dict.fromkeys(keys):
            mine = places[[k == key for k in keys]]
            boxes[key] = rfc7946(_around(mine[:, :4]))
    else:
        raise ValueError(f"density by {by!r}: choose grid or source")
    out: list[DensityCell] = []
    order = np.asarray(keys, dtype=object)
    for key in dict.fromkeys(keys):  # in rank order of each area's best hit
        mine = np.flatnonzero(order == key)
        best = mine[np.argmax(scores[mine])]
        out.append(
            DensityCell(
                key=key,
                count=len(mine),
                mean_score=float(scores[mine].mean()),
                best_score=float(scores[best]),
                best_id=int(ids[best]),
                bounds=tuple(float(v) for v in boxes[key]),  # type: ignore[arg-type]
            )
        )
    out.sort(key=lambda c: (-c.count, -c.best_score))
    return out


def _around(bounds: np.ndarray) -> tuple[float, float, float, float]:
    """The box around unwrapped bounds (`model.lonlat`): as they are, or with the western
    ones moved a turn east when that is narrower (footprints either side of 180)."""
    south, north = float(bounds[:, 1].min()), float(bounds[:, 3].max())
    spans = [
        bounds[:, [0, 2]],
        np.where(bounds[:, [0]] < 0, bounds[:, [0, 2]] + 360, bounds[:, [0, 2]]),
    ]
    west, east = min(
        ((float(s[:, 0].min()), float(s[:, 1].max())) for s in spans), key=lambda b: b[1] - b[0]
    )
    if east - west >= 360.0:
        west, east = -180.0, 180.0
    return west, south, east, north
