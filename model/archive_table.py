"""An archive read as columns, for bulk imports of millions of scenes: `labels.csv` (the
format of `model.archive`) and the archive's `scenes.csv`, which gives each scene's image
file, size, SHA-256 and dates so that no image needs decoding:

    image,path,width,height,checksum,added[,acquired]

`path` is relative to the archive folder; `added` (when the scene entered the archive) and
`acquired` (when its pixels were taken; optional, a cell may be empty) are ISO 8601 times, UTC
unless they say otherwise. Read with pyarrow and checked column by column, with the same rules
as `model.archive.load_archive` (splits, label cells 0/1 or all empty, one row per image,
footprints as GeoJSON in WGS84 or lon/lat); geo columns other than `footprint`, `lon` and `lat`
are refused here (`grn import` without `--bulk` reads them).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pa_csv

from model.archive import FIXED_COLUMNS, OPTIONAL_COLUMNS, SPLITS, ArchiveError, scene_id
from model.lonlat import around_pole, crosses, place_of

SCENES_FILE = "scenes.csv"
SCENE_COLUMNS = ("image", "path", "width", "height", "checksum", "added")
BULK_GEO = ("footprint", "lon", "lat")


@dataclass
class ArchiveTable:
    root: Path
    labels_path: Path
    label_names: list[str]
    ids: np.ndarray
    names: list[str]
    folders: list[str]
    splits: list[str]
    labels: np.ndarray
    """(n, labels) uint8."""
    labelled: np.ndarray
    """(n,) bool: the row's label cells are filled."""
    paths: list[str]
    widths: np.ndarray
    heights: np.ndarray
    checksums: list[str]
    added: list[datetime | None]
    acquired: list[datetime | None]
    """Empty cells, and every row of a file without the column, are None."""
    placed: np.ndarray
    """(n,) bool: the scene has a footprint."""
    geometry: list[str | None]
    """GeoJSON of each footprint (as given; a Point for lon/lat)."""
    bounds: np.ndarray
    """(n, 4) min_lon, min_lat, max_lon, max_lat (NaN where not placed)."""
    centres: np.ndarray
    """(n, 2) lon, lat of each footprint's centroid."""

    def __len__(self) -> int:
        return len(self.ids)


def _strings(path: Path, header: list[str]) -> pa.Table:
    options = pa_csv.ConvertOptions(
        column_types={name: pa.string() for name in header}, strings_can_be_null=False
    )
    return pa_csv.read_csv(path, convert_options=options)


def _header(path: Path) -> list[str]:
    if not path.is_file():
        raise ArchiveError(f"{path} does not exist")
    with path.open(newline="") as handle:
        return next(csv.reader(handle), [])


def _labels(table: pa.Table, names: list[str], where: Path) -> tuple[np.ndarray, np.ndarray]:
    n = table.num_rows
    ones = np.zeros((n, len(names)), np.uint8)
    empty = np.zeros((n, len(names)), bool)
    for k, name in enumerate(names):
        column = pc.utf8_trim_whitespace(table[name])
        one = pc.equal(column, "1").to_numpy(zero_copy_only=False)
        zero = pc.equal(column, "0").to_numpy(zero_copy_only=False)
        empty[:, k] = pc.equal(column, "").to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(~(one | zero | empty[:, k]))
        if len(bad):
            raise ArchiveError(f"{where}:{bad[0] + 2}: label values must be 0 or 1")
        ones[:, k] = one
    labelled = np.asarray(~empty.all(axis=1)) if names else np.zeros(n, bool)
    mixed = np.flatnonzero(labelled & empty.any(axis=1))
    if len(mixed):
        raise ArchiveError(
            f"{where}:{mixed[0] + 2}: some label cells are empty while others are filled; give "
            "every label column 0 or 1, or leave them all empty for a scene that is not labelled"
        )
    return ones, labelled


def _places(
    table: pa.Table, geo: list[str], where: Path
) -> tuple[np.ndarray, list[str | None], np.ndarray, np.ndarray]:
    import shapely

    n = table.num_rows
    geometry: list[str | None] = [None] * n
    if "footprint" in geo:
        geometry = [text.strip() or None for text in table["footprint"].to_pylist()]
    if "lon" in geo and "lat" in geo:
        lon, lat = table["lon"].to_pylist(), table["lat"].to_pylist()
        for i in range(n):
            if geometry[i] is None and lon[i].strip() and lat[i].strip():
                geometry[i] = f'{{"type":"Point","coordinates":[{float(lon[i])},{float(lat[i])}]}}'
    placed = np.asarray([g is not None for g in geometry], bool)
    shapes = np.empty(n, object)
    try:
        shapes[placed] = shapely.from_geojson(np.asarray(geometry, object)[placed])
    except shapely.errors.GEOSException as exc:
        raise ArchiveError(f"{where}: a footprint is not GeoJSON ({exc})") from exc
    bounds = np.full((n, 4), np.nan)
    centres = np.full((n, 2), np.nan)
    if placed.any():
        kinds = shapely.get_type_id(shapes[placed])
        bad = np.flatnonzero(~np.isin(kinds, (0, 3, 6)) | ~shapely.is_valid(shapes[placed]))
        if len(bad):
            row = np.flatnonzero(placed)[bad[0]] + 2
            raise ArchiveError(
                f"{where}:{row}: a footprint must be a valid Polygon, MultiPolygon or Point"
            )
        box = shapely.bounds(shapes[placed])
        bounds[placed] = box
        centres[placed] = shapely.get_coordinates(shapely.centroid(shapes[placed]))
        outside = (box[:, [0, 2]] < -180) | (box[:, [0, 2]] > 180)
        outside |= (box[:, [1, 3]] < -90) | (box[:, [1, 3]] > 90)
        wide = box[:, 2] - box[:, 0] > 180
        # split at the antimeridian or round a pole: unwrapped bounds (model.lonlat)
        for k in np.flatnonzero(wide & ~outside.any(axis=1)):
            at = int(np.flatnonzero(placed)[k])
            if crosses(shapes[at]) or around_pole(shapes[at]):
                (bounds[at], centres[at]), wide[k] = place_of(shapes[at]), False
        bad = np.flatnonzero(outside.any(axis=1) | wide)
        if len(bad):
            row = np.flatnonzero(placed)[bad[0]] + 2
            raise ArchiveError(
                f"{where}:{row}: footprint outside WGS84 lon/lat or across the antimeridian as "
                "drawn (split it at longitude 180 into a MultiPolygon)"
            )
    return placed, geometry, bounds, centres


def _times(column: pa.ChunkedArray) -> list[datetime | None]:
    """ISO 8601 cells as UTC times, empty cells as None."""
    given = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
    return pc.cast(given, pa.timestamp("us", tz="UTC")).to_pylist()


def read_archive_table(root: str | Path, labels_csv: str | Path | None = None) -> ArchiveTable:
    """Read and check an archive's labels.csv and scenes.csv (see the module docstring)."""
    root = Path(root)
    labels_path = Path(labels_csv) if labels_csv else root / "labels.csv"
    header = _header(labels_path)
    if tuple(header[:3]) != FIXED_COLUMNS:
        raise ArchiveError(f"{labels_path}: the header must start with image,scene,split")
    geo = []
    for name in header[3:]:
        if name not in OPTIONAL_COLUMNS:
            break
        geo.append(name)
    if set(geo) - set(BULK_GEO):
        raise ArchiveError(
            f"{labels_path}: --bulk reads only the optional columns {', '.join(BULK_GEO)} "
            f"(not {', '.join(sorted(set(geo) - set(BULK_GEO)))}); import this archive "
            "without --bulk"
        )
    label_names = header[3 + len(geo) :]
    table = _strings(labels_path, header)
    names = table["image"].to_pylist()
    if len(set(names)) != len(names):
        raise ArchiveError(f"{labels_path}: an image is listed twice")
    splits = table["split"].to_pylist()
    wrong = pc.invert(pc.is_in(table["split"], pa.array(SPLITS))).to_numpy(zero_copy_only=False)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise ArchiveError(f"{labels_path}:{row + 2}: split {splits[row]!r} is not one of {SPLITS}")
    labels, labelled = _labels(table, label_names, labels_path)
    placed, geometry, bounds, centres = _places(table, geo, labels_path)

    scenes_path = root / SCENES_FILE
    scene_header = _header(scenes_path)
    if tuple(scene_header[: len(SCENE_COLUMNS)]) != SCENE_COLUMNS:
        raise ArchiveError(f"{scenes_path}: the header must start with {','.join(SCENE_COLUMNS)}")
    scenes = _strings(scenes_path, scene_header)
    if scenes["image"].to_pylist() != names:
        raise ArchiveError(f"{scenes_path} must list the images of {labels_path}, in its order")
    try:
        widths = scenes["width"].cast(pa.int32()).to_numpy()
        heights = scenes["height"].cast(pa.int32()).to_numpy()
        added = _times(scenes["added"])
        acquired: list[datetime | None] = [None] * len(names)
        if "acquired" in scene_header:
            acquired = _times(scenes["acquired"])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ArchiveError(f"{scenes_path}: {exc}") from exc
    return ArchiveTable(
        root=root, labels_path=labels_path, label_names=label_names,
        ids=np.asarray([scene_id(name) for name in names], np.int64), names=names,
        folders=table["scene"].to_pylist(), splits=splits, labels=labels, labelled=labelled,
        paths=scenes["path"].to_pylist(), widths=widths, heights=heights,
        checksums=scenes["checksum"].to_pylist(), added=added, acquired=acquired, placed=placed,
        geometry=geometry, bounds=bounds, centres=centres,
    )  # fmt: skip
