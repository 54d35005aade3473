"""`grn reconcile`: SQL is the source of truth; find and repair drift between it and the index
in service (scenes in one and not the other, an index built by another model than the one in
use)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from index.job import ReindexReport, ReindexSettings, reindex
from index.milvus_job import MilvusReport
from index.store import IndexStore
from model.card import read_card
from service.db import ArchiveImport, Scene


@dataclass
class Drift:
    model_version: str
    index_version: str | None
    index_model_version: str | None
    missing_from_index: list[int] = field(default_factory=list)
    """In SQL, not in the index."""
    unknown_to_sql: list[int] = field(default_factory=list)
    """In the index, not in SQL."""

    @property
    def stale_model(self) -> bool:
        return self.index_model_version != self.model_version

    @property
    def clean(self) -> bool:
        return not (self.stale_model or self.missing_from_index or self.unknown_to_sql)

    def describe(self) -> list[str]:
        lines = []
        if self.index_version is None:
            lines.append("no index has been built")
        elif self.stale_model:
            lines.append(
                f"index {self.index_version} was built by model {self.index_model_version}, "
                f"the model in use is {self.model_version}: a full rebuild is needed"
            )
        if self.missing_from_index:
            lines.append(f"{len(self.missing_from_index)} scenes in SQL are not in the index")
        if self.unknown_to_sql:
            lines.append(f"{len(self.unknown_to_sql)} indexed scenes are not in SQL")
        return lines


def find_drift(engine: Engine, model_path: str | Path, index_root: str | Path) -> Drift:
    model_version = read_card(model_path).version
    store = IndexStore(index_root)
    version = store.current_version()
    with Session(engine) as session:
        sql_ids = np.asarray(session.scalars(select(Scene.id)).all(), dtype=np.int64)
    if version is None:
        return Drift(model_version, None, None, sorted(sql_ids.tolist()), [])
    manifest = store.manifest(version)
    held = store.ids(version)
    return Drift(
        model_version,
        version,
        manifest.model_version,
        sorted(sql_ids[~np.isin(sql_ids, held)].tolist()),
        sorted(held[~np.isin(held, sql_ids)].tolist()),
    )


class ReconcileError(ValueError):
    """The drift cannot be repaired automatically (say why)."""


def repair(
    engine: Engine,
    model_path: str | Path,
    index_root: str | Path,
    drift: Drift,
    *,
    settings: ReindexSettings | None = None,
    device: str = "auto",
    progress: bool = True,
) -> ReindexReport | None:
    """Bring the index to exactly the scenes of SQL, embedded by the model in use: an
    incremental build when only scenes differ, a full one when the model changed."""
    if drift.clean:
        return None
    root, labels, names = _single_archive(engine)
    return reindex(
        model_path,
        root,
        index_root,
        labels_csv=labels,
        settings=settings,
        incremental=drift.index_version is not None and not drift.stale_model,
        device=device,
        progress=progress,
        names=names,
    )


def _single_archive(engine: Engine) -> tuple[str, str, list[str]]:
    """The archive root, labels file and scene names of SQL's scenes (one archive only)."""
    with Session(engine) as session:
        rows = session.execute(
            select(Scene.name, ArchiveImport.root, ArchiveImport.labels_csv).join(
                ArchiveImport, Scene.archive_id == ArchiveImport.id
            )
        ).all()
    sources = {(root, labels) for _, root, labels in rows}
    if len(sources) > 1:
        raise ReconcileError(
            f"the scenes come from {len(sources)} imports of different archives; reconcile "
            "repairs one archive at a time: run `grn reindex` with each"
        )
    if not rows:
        raise ReconcileError("SQL holds no scenes: run `grn import` first")
    root, labels = sources.pop()
    return root, labels, [name for name, _, _ in rows]


def find_milvus_drift(engine: Engine, model_path: str | Path, uri: str, collection: str) -> Drift:
    """The same comparison for a Milvus collection (`index_version` is its name)."""
    from pymilvus import MilvusClient

    from index.backends import collection_ids, collection_model, resolve_collection

    model_version = read_card(model_path).version
    with Session(engine) as session:
        sql_ids = np.asarray(session.scalars(select(Scene.id)).all(), dtype=np.int64)
    client = MilvusClient(uri=uri)
    try:
        live = resolve_collection(client, collection)
        if live is None:
            return Drift(model_version, None, None, sorted(sql_ids.tolist()), [])
        stored = collection_model(client, live)
        if stored != model_version:
            return Drift(model_version, live, stored)
        held = collection_ids(client, live)
    finally:
        client.close()
    return Drift(
        model_version,
        live,
        stored,
        sorted(sql_ids[~np.isin(sql_ids, held)].tolist()),
        sorted(held[~np.isin(held, sql_ids)].tolist()),
    )


def repair_milvus(
    engine: Engine,
    model_path: str | Path,
    uri: str,
    collection: str,
    work: str | Path,
    drift: Drift,
    *,
    device: str = "auto",
    progress: bool = True,
) -> MilvusReport | None:
    """Bring the collection to exactly SQL's scenes (rebuilt whole for a new model)."""
    from index.milvus_job import reindex_milvus

    if drift.clean:
        return None
    root, labels, names = _single_archive(engine)
    return reindex_milvus(
        model_path,
        root,
        uri,
        collection,
        work,
        labels_csv=labels,
        incremental=drift.index_version is not None and not drift.stale_model,
        replace=drift.stale_model,
        device=device,
        progress=progress,
        names=names,
    )
