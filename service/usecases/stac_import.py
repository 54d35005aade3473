"""`grn import --stac`: a STAC catalog's items into the archive (`model.stac` reads them).

Each item's GeoTIFF/COG asset is tiled as `grn tile` tiles a raster (`model.tile_archive`),
into a folder of its own under the tiles folder (`<tiles>/<item id>/`), whose labels.csv
also says when the item was acquired; that folder is then imported as any archive, the
item's properties kept as its scenes' metadata (`{"stac": {...}}`).

- Per item: an item that cannot be imported (no geometry, a date that does not parse, no
  such asset, an asset that cannot be reached or has no CRS) is reported with its problem and
  the others are imported. An item's tiles are written to a staging folder, dated, then
  renamed into place, so a killed import leaves no half-tiled item; a scene is imported
  whole or not at all (`service.usecases.importer`).
- Again: an item whose folder exists is not tiled again, and its scenes already in SQL are
  skipped, so importing the same catalog twice adds nothing.
- `max_cloud`: items whose `eo:cloud_cover` is above it, or not given, are left out.
"""

from __future__ import annotations

import csv
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from model.stac import StacProblem, StacRaster, read_stac
from service.settings import Settings
from service.usecases.importer import import_archive


def tiles_folder(settings: Settings, given: Path | None = None) -> Path:
    """Where a STAC import writes its items' tiles: `given`, else GRN_STORE_DIR/stac."""
    return given if given is not None else settings.files.store_dir / "stac"


@dataclass
class StacImportReport:
    tiles_dir: Path
    items: int = 0
    """Items found."""
    imported: list[str] = field(default_factory=list)
    """Items whose scenes are in SQL now."""
    added: int = 0
    skipped: int = 0
    """Scenes already present."""
    cloudy: list[str] = field(default_factory=list)
    """Items left out by `max_cloud`."""
    problems: list[StacProblem] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> list[str]:
        lines = [
            f"imported {self.added} scenes ({self.skipped} already present) from "
            f"{len(self.imported)} of {self.items} STAC items in "
            f"{self.seconds:.1f} s; tiles in {self.tiles_dir}"
        ]
        if self.cloudy:
            lines.append(
                f"  {len(self.cloudy)} items left out by max_cloud (eo:cloud_cover above it "
                "or not given)"
            )
        return lines

    def problem_lines(self) -> list[str]:
        """Each item that could not be imported, with its problem."""
        return [f"  item {problem.item}: {problem.error}" for problem in self.problems]

    @property
    def failure(self) -> str | None:
        """Why the import as a whole failed: no item could be imported (None otherwise)."""
        if self.problems and not self.imported:
            return f"none of the {len(self.problems)} STAC items could be imported"
        return None


def import_stac(
    engine: Engine,
    source: str | Path,
    tiles_dir: str | Path,
    *,
    asset: str | None = None,
    max_cloud: float | None = None,
    tile_options: dict[str, Any] | None = None,
    progress: bool = True,
) -> StacImportReport:
    """Import the items of the STAC catalog at `source` (see the module docstring).
    `tile_options`: `tile_rasters`'s keyword arguments (`grid`, a
    `model.tiling.TileGrid`; `max_nodata`). Raises
    `StacError` for a source that is not STAC, `SchemaNotCurrentError` before any work when
    the database's schema is not current."""
    from model.rasters import RasterError
    from service.storage.migrate import current_revision, head_revision
    from service.storage.scene_reading import SchemaNotCurrentError

    started = time.perf_counter()
    if current_revision(engine) != head_revision():
        raise SchemaNotCurrentError(
            "the database schema is not current; run `grn db upgrade` first"
        )
    read = read_stac(source, asset)
    found = len(read.rasters) + len(read.problems)
    report = StacImportReport(Path(tiles_dir).resolve(), items=found)
    report.problems = list(read.problems)
    for raster in read.rasters:
        cover = raster.cloud_cover
        if max_cloud is not None and (cover is None or cover > max_cloud):
            report.cloudy.append(raster.item_id)
            continue
        folder = report.tiles_dir / raster.name
        try:
            if not (folder / "labels.csv").is_file():
                _tile_item(raster, folder, tile_options or {})
        except RasterError as exc:
            report.problems.append(StacProblem(raster.item_id, str(exc)))
            continue
        done = import_archive(
            engine, folder, metadata={raster.name: raster.metadata()}, progress=progress
        )
        report.added += done.added
        report.skipped += done.skipped
        report.problems += [StacProblem(raster.item_id, b.error) for b in done.broken]
        report.imported.append(raster.item_id)
    report.seconds = time.perf_counter() - started
    return report


def _tile_item(raster: StacRaster, folder: Path, options: dict[str, Any]) -> None:
    """The item's tiles in `folder`, with its acquisition time: written beside it, then
    renamed into place."""
    from model.tile_archive import tile_rasters

    staging = folder.with_name(f".{folder.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    tile_rasters([raster.href], staging, names=[raster.name], replace=True, **options)
    try:
        _date_labels(staging / "labels.csv", raster)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _date_labels(labels: Path, raster: StacRaster) -> None:
    """Add the `acquired` column to a tiles folder's labels.csv."""
    with labels.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    when = "" if raster.acquired is None else raster.acquired.isoformat()
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([*header[:3], "acquired", *header[3:]])
        writer.writerows([*row[:3], when, *row[3:]] for row in rows)
