"""`grn reconcile`: SQL is the source of truth; find and repair drift between it and the
vector store's version in service (scenes in one and not the other, an index built by another
model than the one in use), whichever store is configured."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from index.stores import ReindexOptions, ReindexReport, VectorStore
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


def find_drift(engine: Engine, model_path: str | Path, store: VectorStore) -> Drift:
    """SQL's scenes against those of the store's version in service, and the model that
    built it against the one in use."""
    model_version = read_card(model_path).version
    current = store.current()
    with Session(engine) as session:
        sql_ids = np.asarray(session.scalars(select(Scene.id)).all(), dtype=np.int64)
    if current is None:
        return Drift(model_version, None, None, sorted(sql_ids.tolist()), [])
    held = store.ids(current.version)
    return Drift(
        model_version,
        current.version,
        current.model_version,
        sorted(sql_ids[~np.isin(sql_ids, held)].tolist()),
        sorted(held[~np.isin(held, sql_ids)].tolist()),
    )


class ReconcileError(ValueError):
    """The drift cannot be repaired automatically (say why)."""


def repair(
    engine: Engine,
    model_path: str | Path,
    store: VectorStore,
    drift: Drift,
    *,
    device: str = "auto",
    progress: bool = True,
) -> ReindexReport | None:
    """Bring the store to exactly the scenes of SQL, embedded by the model in use: an
    incremental build when only scenes differ, a full one (replacing the version in
    service) when the model changed."""
    if drift.clean:
        return None
    root, labels, names = _single_archive(engine)
    options = ReindexOptions(
        labels_csv=labels,
        incremental=drift.index_version is not None and not drift.stale_model,
        replace=drift.stale_model,
        names=names,
        device=device,
        progress=progress,
    )
    return store.reindex(model_path, root, options)


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
