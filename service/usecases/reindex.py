"""`grn reindex` as a use case: the scenes to index (an archive folder, or those SQL holds),
the vector store of the settings, the build options, and the model; then the store builds a
new version and puts it in service (`VectorStore.reindex`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from index.stores import ReindexOptions, ReindexReport, is_current, open_store
from service.settings import Settings
from service.storage.catalog_archive import catalog_archive


class IndexWriteError(OSError):
    """The new version could not be written (disk full, a size limit, permissions); the
    version in service is unchanged."""


@dataclass(frozen=True)
class ReindexRequest:
    model: Path
    """The model file, or the training folder holding it."""
    archive: Path | None = None
    """An archive folder; None: the scenes SQL holds."""
    options: ReindexOptions = field(default_factory=ReindexOptions)
    """How the store builds, as it takes them: the archive's labels file (`labels_csv`,
    default ARCHIVE/labels.csv), incremental or a replacing full build, FAISS's build
    settings (`index.stores.faiss_build.ReindexSettings`), device, Ray."""
    if_stale: bool = False
    """Do nothing when the version in service was built by this model over these scenes."""


@dataclass(frozen=True)
class ReindexOutcome:
    location: str
    """Where the store keeps its versions."""
    report: ReindexReport | None
    """None when nothing was built: `if_stale` and the version in service is current."""


def reindex_scenes(
    settings: Settings, request: ReindexRequest, engine: Engine | None = None
) -> ReindexOutcome:
    """Index `request.archive` (or, when None, the scenes SQL holds through `engine`) with
    `request.model` into the vector store of `settings`. Raises `EmptyCatalogError` when SQL
    holds no scenes and `IndexWriteError` when the new version cannot be written."""
    source: Any = request.archive
    if source is None:
        if engine is None:
            raise ValueError("give the scenes to index: an archive folder or the database")
        source = catalog_archive(engine)
    store = open_store(settings.store)
    try:
        if request.if_stale and is_current(
            store, request.model, source, labels_csv=request.options.labels_csv
        ):
            return ReindexOutcome(store.location, None)
        return ReindexOutcome(store.location, store.reindex(request.model, source, request.options))
    except OSError as exc:  # disk full, size limit, permissions: nothing was put in service
        # missing backbone weights say where to put them (model.backbones, which imports
        # torch, is loaded when a network was built: never where torch is not installed)
        backbones = sys.modules.get("model.backbones")
        if backbones is not None and isinstance(exc, backbones.MissingWeightsError):
            raise
        raise IndexWriteError(
            f"the new index could not be written: {exc}; "
            f"the index in service in {store.location} is unchanged"
        ) from exc
    finally:
        store.close()
