"""`grn import`: an archive's scenes and labels into SQL.

Scenes that are not labelled (or all scenes, when labels.csv has no label columns) import
with no labels. A scene's footprint (labels.csv's geo columns, or the georeferencing of a
GeoTIFF scene) is written with its row (`scene_footprints`), and so is when it was acquired
(labels.csv's `acquired`, or a GeoTIFF scene's date tags: `model.rasters.acquired_of_file`).

Idempotent: a scene already in the store (same id, i.e. the same image stem) is left as it
is, so a second run adds nothing. Every image is decoded before its row is written, so an
unreadable file is reported and skipped rather than imported. Scenes are written in chunks,
each chunk in one transaction with its scene-label links: a killed import leaves whole scenes
only, and running it again completes it.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import InstrumentedAttribute, Session
from tqdm import tqdm

from model.archive import Archive, ArchiveEntry, BrokenFile, load_archive, scene_id
from model.faults import kill_point
from model.geo import SceneGeo
from model.imageio import InvalidImageError, decode_image
from service.storage.db import ArchiveImport, Label, Scene, SceneFootprint, SceneLabel, utcnow
from service.storage.scene_reading import SchemaNotCurrentError
from service.storage.spatial import footprint_row

CHUNK = 256
MEDIA_TYPES = {".tif": "image/tiff", ".tiff": "image/tiff"}


@dataclass
class ImportReport:
    archive_id: int
    added: int
    skipped: int
    broken: list[BrokenFile] = field(default_factory=list)
    seconds: float = 0.0
    placed: int = 0
    """Scenes already present that gained the footprint labels.csv now gives them."""

    def summary(self) -> list[str]:
        """What the import did, in lines (the unreadable files apart: `broken`)."""
        lines = [
            f"imported {self.added} scenes ({self.skipped} already present, "
            f"{len(self.broken)} unreadable) in {self.seconds:.1f} s; import #{self.archive_id}"
        ]
        if self.placed:
            lines.append(f"  {self.placed} scenes already present gained their footprint")
        return lines


@dataclass
class _Checked:
    entry: ArchiveEntry
    id: int
    width: int = 0
    height: int = 0
    checksum: str = ""
    geo: SceneGeo | None = None
    acquired: datetime | None = None
    error: str | None = None


def media_type(path: Path) -> str:
    suffix = path.suffix.lower()
    return MEDIA_TYPES.get(suffix) or mimetypes.guess_type(path.name)[0] or "image/jpeg"


def _check(entry: ArchiveEntry) -> _Checked:
    checked = _Checked(entry, scene_id(entry.name))
    try:
        data = entry.path.read_bytes()
        pixels = decode_image(data, str(entry.path))
    except OSError as exc:
        checked.error = f"{entry.path}: cannot read file ({exc.strerror or exc})"
        return checked
    except InvalidImageError as exc:
        checked.error = str(exc)
        return checked
    checked.height, checked.width = int(pixels.shape[0]), int(pixels.shape[1])
    checked.checksum = hashlib.sha256(data).hexdigest()
    checked.geo, checked.acquired = entry.geo, entry.acquired
    if entry.path.suffix.lower() in MEDIA_TYPES:
        from model.rasters import RasterError, acquired_of_file, footprint_of_file

        try:  # a GeoTIFF scene keeps its own georeferencing and date
            checked.geo = checked.geo or footprint_of_file(entry.path)
            checked.acquired = checked.acquired or acquired_of_file(entry.path)
        except RasterError as exc:
            checked.error = str(exc)
    return checked


def existing_ids(
    session: Session, ids: Sequence[int], column: InstrumentedAttribute[int] = Scene.id
) -> set[int]:
    """Which of `ids` the id column holds (scenes by default)."""
    found: set[int] = set()
    for start in range(0, len(ids), 1000):  # stay under every driver's bind-parameter limit
        found.update(session.scalars(select(column).where(column.in_(ids[start : start + 1000]))))
    return found


def _label_ids(session: Session, names: Sequence[str]) -> dict[str, int]:
    known = {label.name: label.id for label in session.scalars(select(Label))}
    for name in names:
        if name not in known:
            label = Label(name=name)
            session.add(label)
            session.flush()
            known[name] = label.id
    return known


def start_record(
    engine: Engine, root: Path, labels_path: Path, label_names: Sequence[str]
) -> tuple[int, dict[str, int]]:
    """The import's row in `archives` (status importing) and the labels' ids, created where
    new: (the import's id, label ids by name)."""
    with Session(engine) as session, session.begin():
        record = ArchiveImport(
            root=str(root),
            labels_csv=str(labels_path),
            status="importing",
            scenes_added=0,
            scenes_skipped=0,
            broken="[]",
        )
        session.add(record)
        session.flush()
        return record.id, _label_ids(session, label_names)


def _checked_stream(scenes: Sequence[ArchiveEntry], workers: int) -> Iterator[_Checked]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_check, scenes)


def import_archive(
    engine: Engine,
    root: str | Path,
    labels_csv: str | Path | None = None,
    *,
    progress: bool = True,
    workers: int = 2,
    metadata: Mapping[str, dict[str, Any]] | None = None,
) -> ImportReport:
    """Import an archive's scenes (see the module docstring); returns what happened.
    `metadata`: what the new scenes of each scene folder keep as metadata (a STAC item's
    properties)."""
    start = time.perf_counter()
    archive: Archive = load_archive(root, labels_csv)
    root_path = archive.root.resolve()
    labels_path = Path(labels_csv).resolve() if labels_csv else root_path / "labels.csv"
    archive_id, label_ids = start_record(engine, root_path, labels_path, archive.label_names)
    report = ImportReport(archive_id, 0, 0)
    try:
        with Session(engine) as session:
            present = existing_ids(session, [scene_id(s.name) for s in archive.scenes])
        todo = [s for s in archive.scenes if scene_id(s.name) not in present]
        report.skipped = len(archive.scenes) - len(todo)
        report.placed = _place_present(engine, archive, present)
        bar = tqdm(total=len(todo), desc="import", unit="img", disable=not progress)
        chunk: list[_Checked] = []
        written = 0
        for checked in _checked_stream(todo, workers):
            bar.update(1)
            if checked.error is not None:
                report.broken.append(
                    BrokenFile(checked.entry.name, str(checked.entry.path), checked.error)
                )
                continue
            chunk.append(checked)
            if len(chunk) == CHUNK:
                report.added += _write_chunk(
                    engine, chunk, archive, archive_id, root_path, label_ids, metadata
                )
                written += 1
                kill_point(f"import-chunk:{written}")
                chunk = []
        if chunk:
            report.added += _write_chunk(
                engine, chunk, archive, archive_id, root_path, label_ids, metadata
            )
        bar.close()
    except BaseException:
        finish_record(engine, archive_id, "failed", report)
        raise
    report.seconds = time.perf_counter() - start
    finish_record(engine, archive_id, "complete", report)
    return report


def import_to_current_schema(
    engine: Engine, root: str | Path, labels_csv: str | Path | None = None, *,
    progress: bool = True,
) -> ImportReport:  # fmt: skip
    """`import_archive`, into a database whose schema is current (`grn import`): raises
    `SchemaNotCurrentError` before any work when it is not."""
    from service.storage.migrate import current_revision, head_revision

    if current_revision(engine) != head_revision():
        raise SchemaNotCurrentError(
            "the database schema is not current; run `grn db upgrade` first"
        )
    return import_archive(engine, root, labels_csv, progress=progress)


def _place_present(engine: Engine, archive: Archive, present: set[int]) -> int:
    """Footprints for scenes imported before their archive gave them one (an archive
    georeferenced later, or a database from before migration 0005): written where SQL has
    none, never replacing one."""
    given = {scene_id(s.name): s.geo for s in archive.scenes if s.geo is not None}
    wanted = sorted(set(given) & present)
    if not wanted:
        return 0
    with Session(engine) as session:
        placed = existing_ids(session, wanted, SceneFootprint.scene_id)
    rows = [footprint_row(i, given[i]) for i in wanted if i not in placed]
    for start in range(0, len(rows), CHUNK):
        with Session(engine) as session, session.begin():
            session.execute(insert(SceneFootprint).values(rows[start : start + CHUNK]))
    return len(rows)


def _write_chunk(
    engine: Engine,
    chunk: Sequence[_Checked],
    archive: Archive,
    archive_id: int,
    root: Path,
    label_ids: dict[str, int],
    metadata: Mapping[str, dict[str, Any]] | None = None,
) -> int:
    given = metadata or {}
    scenes = [
        {
            "id": checked.id,
            "name": checked.entry.name,
            "folder": checked.entry.folder,
            "split": checked.entry.split,
            "archive_id": archive_id,
            "path": str(checked.entry.path.resolve().relative_to(root)),
            "media_type": media_type(checked.entry.path),
            "width": checked.width,
            "height": checked.height,
            "checksum": checked.checksum,
            "created_at": utcnow(),
            "acquired": checked.acquired,
            "meta": json.dumps(given[checked.entry.folder])
            if checked.entry.folder in given
            else None,
        }
        for checked in chunk
    ]
    # a scene that is not labelled gets no links, as one labelled with none of the labels:
    # nothing that reads SQL needs to tell them apart (docs/usage.md, `grn import`)
    links = [
        {"scene_id": checked.id, "label_id": label_ids[name]}
        for checked in chunk
        if checked.entry.labelled
        for name, present in zip(archive.label_names, checked.entry.labels, strict=True)
        if present
    ]
    places = [footprint_row(c.id, c.geo) for c in chunk if c.geo is not None]
    # one multi-row INSERT each (CHUNK scenes): the catalog's triggers fire once per
    # statement on PostgreSQL, not once per row as an executemany would make them
    with Session(engine) as session, session.begin():
        session.execute(insert(Scene).values(scenes))
        if links:
            session.execute(insert(SceneLabel).values(links))
        if places:
            session.execute(insert(SceneFootprint).values(places))
    return len(chunk)


def finish_record(engine: Engine, archive_id: int, status: str, report: ImportReport) -> None:
    """The import's row in `archives`: how it ended and what it did."""
    with Session(engine) as session, session.begin():
        record = session.get(ArchiveImport, archive_id)
        if record is None:  # pragma: no cover - the row was written at the start
            return
        record.status = status
        record.scenes_added = report.added
        record.scenes_skipped = report.skipped
        record.broken = json.dumps([b.__dict__ for b in report.broken])
        record.finished_at = utcnow()
