"""`grn import --bulk`: millions of scenes into SQL at thousands a second, then their vectors
into the index.

The archive is read as columns (`model.archive_table`: labels.csv, and scenes.csv for each
image's size, SHA-256, added and acquisition times, so no image is decoded); the scenes SQL
lacks are written in batches of `batch` scenes (PostgreSQL's COPY, SQLite's executemany:
`service.storage.bulk_rows`), each batch with its labels and footprints in one transaction, the
same rows `grn import` writes. Then, when the archive carries vectors (`index.given_vectors`)
of the model in use, the store in service is brought to SQL's scenes as `grn reindex --catalog`
does (incrementally when its version was built by this model, else in full), taking those
vectors instead of embedding the images. A bulk import killed at any point leaves whole batches
in SQL and the previous index version in service: running it again skips the scenes SQL holds
and completes the rest, and `grn reconcile --repair` (which also takes the carried vectors)
brings the index to SQL's scenes. Nothing is written twice: a scene id is its image stem's
hash, SQL's primary key."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from tqdm import tqdm

from model.archive import ArchiveError
from model.archive_table import ArchiveTable, read_archive_table
from model.faults import kill_point
from service.settings import Settings
from service.storage.bulk_rows import catalog_logged_once, refresh_statistics, write_rows
from service.storage.db import Scene, SceneFootprint, SceneLabel, utcnow
from service.usecases.importer import ImportReport, finish_record, media_type, start_record
from service.usecases.reindex import ReindexOutcome, ReindexRequest, reindex_scenes

BATCH = 20_000
RECALL_QUERIES = 200
"""The index build's recall@10 is measured on this many queries (exact search over every
scene for each: at a million scenes, 1000 took longer than the build)."""
SCENE_COLUMNS = (
    "id", "name", "scene", "split", "archive_id", "path", "media_type", "width", "height",
    "checksum", "created_at", "acquired",
)  # fmt: skip
FOOTPRINT_COLUMNS = ("scene_id", "min_lon", "min_lat", "max_lon", "max_lat", "lon", "lat",
                     "geometry")  # fmt: skip


@dataclass
class BulkImportReport(ImportReport):
    read_seconds: float = 0.0
    write_seconds: float = 0.0

    def summary(self) -> list[str]:
        rate = self.added / self.write_seconds if self.write_seconds else 0.0
        return [
            *super().summary(),
            f"  read {self.read_seconds:.1f} s, written {self.write_seconds:.1f} s "
            f"({rate:,.0f} scenes/s)",
        ]


def _missing_files(table: ArchiveTable, todo: np.ndarray) -> list[str]:
    root = str(table.root)
    return [table.paths[i] for i in todo if not os.path.exists(os.path.join(root, table.paths[i]))]


def _present(engine: Engine, ids: np.ndarray) -> np.ndarray:
    """Which of `ids` SQL holds (one pass over the scene ids)."""
    with Session(engine) as session:
        held = np.fromiter(session.scalars(select(Scene.id)), np.int64)
    return np.isin(ids, held)


def _write_batch(
    engine: Engine, table: ArchiveTable, rows: np.ndarray, archive_id: int,
    label_ids: list[int],
) -> None:  # fmt: skip
    now = utcnow()
    rows = rows[np.argsort(table.ids[rows])]  # in key order, as the primary key's B-tree
    scenes = [
        (
            int(table.ids[i]),
            table.names[i],
            table.folders[i],
            table.splits[i],
            archive_id,
            table.paths[i],
            media_type(Path(table.paths[i])),
            int(table.widths[i]),
            int(table.heights[i]),
            table.checksums[i],
            table.added[i] or now,
            table.acquired[i],
        )
        for i in rows.tolist()
    ]
    labelled = rows[table.labelled[rows]]
    scene_rows, label_columns = np.nonzero(table.labels[labelled])
    links = list(
        zip(table.ids[labelled][scene_rows].tolist(),
            np.asarray(label_ids)[label_columns].tolist(), strict=True)
    )  # fmt: skip
    placed = rows[table.placed[rows]]
    places = [
        (
            int(table.ids[i]),
            *table.bounds[i].tolist(),
            *table.centres[i].tolist(),
            table.geometry[i],
        )
        for i in placed.tolist()
    ]
    with engine.begin() as connection:
        with catalog_logged_once(connection, [row[0] for row in scenes]):
            write_rows(connection, Scene.__table__, SCENE_COLUMNS, scenes)  # type: ignore[arg-type]
            write_rows(connection, SceneLabel.__table__, ("scene_id", "label_id"), links)  # type: ignore[arg-type]
        write_rows(connection, SceneFootprint.__table__, FOOTPRINT_COLUMNS, places)  # type: ignore[arg-type]


def bulk_import(
    engine: Engine,
    root: str | Path,
    labels_csv: str | Path | None = None,
    *,
    batch: int = BATCH,
    progress: bool = True,
) -> BulkImportReport:
    """Write the archive's scenes that SQL lacks (see the module docstring)."""
    start = time.perf_counter()
    table = read_archive_table(root, labels_csv)
    present = _present(engine, table.ids)
    todo = np.flatnonzero(~present)
    missing = _missing_files(table, todo)
    if missing:
        raise ArchiveError(
            f"{len(missing)} image files that scenes.csv names do not exist (first: "
            f"{table.root / missing[0]})"
        )
    root_path = table.root.resolve()
    archive_id, label_ids = start_record(
        engine, root_path, table.labels_path.resolve(), table.label_names
    )
    report = BulkImportReport(archive_id, 0, int(present.sum()))
    report.read_seconds = time.perf_counter() - start
    ordered = [label_ids[name] for name in table.label_names]
    written = time.perf_counter()
    bar = tqdm(total=len(todo), desc="import", unit="scene", disable=not progress)
    try:
        for number, first in enumerate(range(0, len(todo), batch), start=1):
            rows = todo[first : first + batch]
            _write_batch(engine, table, rows, archive_id, ordered)
            report.added += len(rows)
            bar.update(len(rows))
            kill_point(f"bulk-batch:{number}")
    except BaseException:
        finish_record(engine, archive_id, "failed", report)
        raise
    finally:
        bar.close()
    if report.added:
        with engine.begin() as connection:
            written_tables = (Scene.__table__, SceneLabel.__table__, SceneFootprint.__table__)
            refresh_statistics(connection, written_tables)  # type: ignore[arg-type]
    report.write_seconds = time.perf_counter() - written
    report.seconds = time.perf_counter() - start
    finish_record(engine, archive_id, "complete", report)
    return report


class CarriedVectorsError(ValueError):
    """The archive's vectors were made by another model than the one in use."""


def carried_vectors_model(root: str | Path, model: Path) -> bool:
    """Whether the archive carries vectors of `model` (False when it carries none); raises
    CarriedVectorsError when they are another model's."""
    from index.given_vectors import GivenVectors, vectors_folder
    from model.card import read_card

    folder = vectors_folder(root)
    if folder is None:
        return False
    given, card = GivenVectors.open(folder), read_card(model)
    if not given.matches(card.version, card.vector_dim):
        raise CarriedVectorsError(
            f"{folder} holds vectors of model {given.model_version} "
            f"({given.vectors.shape[1]}-d), the model in use is {card.version} "
            f"({card.vector_dim}-d); import with --no-index, then `grn reindex --catalog` "
            "embeds the images with this model"
        )
    return True


def index_catalog(
    settings: Settings, engine: Engine, model: Path, *, progress: bool = True
) -> ReindexOutcome:
    """The store in service brought to SQL's scenes (`grn reindex --catalog`): nothing when
    its version was built by `model` over exactly those scenes, else incrementally when it
    was built by `model`, else a new full version; scenes whose archive carries this model's
    vectors are not embedded."""
    from index.stores import ReindexOptions, open_store
    from index.stores.faiss_build import ReindexSettings
    from model.card import read_card

    store = open_store(settings.store)
    try:
        current = store.current()
    finally:
        store.close()
    incremental = current is not None and current.model_version == read_card(model).version
    options = ReindexOptions(
        incremental=incremental, replace=current is not None and not incremental,
        progress=progress, build=ReindexSettings(recall_queries=RECALL_QUERIES),
    )  # fmt: skip
    request = ReindexRequest(model=model, options=options, if_stale=True)
    return reindex_scenes(settings, request, engine)
