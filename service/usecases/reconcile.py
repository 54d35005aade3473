"""`grn reconcile`: SQL is the source of truth; find and repair drift between it and the
vector store's version in service (scenes in one and not the other, an index built by another
model than the one in use), whichever store is configured.

Scenes added through the API that the version does not hold yet are not drift when SQL keeps
their embedding by the model in use: the service searches them from it (`pending`); a repair
or `grn reindex --catalog` folds them into a new version."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Engine

from index.results import in_sorted
from index.stores import ReindexOptions, ReindexReport, VectorStore
from model.card import read_card
from service.storage.catalog import Catalog
from service.storage.catalog_archive import EmptyCatalogError, catalog_archive
from service.usecases.status import written_ids


@dataclass
class Drift:
    model_version: str
    index_version: str | None
    index_model_version: str | None
    missing_from_index: list[int] = field(default_factory=list)
    """In SQL, not in the index."""
    unknown_to_sql: list[int] = field(default_factory=list)
    """In the index, not in SQL."""
    pending: list[int] = field(default_factory=list)
    """In SQL with an embedding by the model in use, not in the index: searched from it."""

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
        if self.pending and not self.stale_model:
            lines.append(
                f"{len(self.pending)} scenes added through the API are searched from the "
                "embeddings SQL keeps (`grn reindex --catalog` folds them into the index)"
            )
        return lines


def find_drift(engine: Engine, model_path: str | Path, store: VectorStore) -> Drift:
    """SQL's scenes against those of the store's version in service, and the model that
    built it against the one in use."""
    model_version = read_card(model_path).version
    current = store.current()
    sql_ids = Catalog(engine).id_array()  # sorted, as a version's ids are
    written = np.sort(written_ids(engine, model_version))
    if current is None:
        return Drift(model_version, None, None, sql_ids.tolist(), [])
    held = store.ids(current.version)
    absent = sql_ids[~in_sorted(held, sql_ids)]
    searched = in_sorted(written, absent) & (current.model_version == model_version)
    return Drift(
        model_version,
        current.version,
        current.model_version,
        absent[~searched].tolist(),
        held[~in_sorted(sql_ids, held)].tolist(),
        absent[searched].tolist(),
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
    """Bring the store to exactly the scenes of SQL (every import's and the API's), embedded
    by the model in use: an incremental build when only scenes differ (the pending ones
    folded in), a full one (replacing the version in service) when the model changed."""
    if drift.clean:
        return None
    try:
        archive = catalog_archive(engine)
    except EmptyCatalogError as exc:
        raise ReconcileError(str(exc)) from exc
    options = ReindexOptions(
        incremental=drift.index_version is not None and not drift.stale_model,
        replace=drift.stale_model,
        device=device,
        progress=progress,
    )
    return store.reindex(model_path, archive, options)
