"""The vector stores and the one factory that opens the configured one.

    store = open_store(settings)        # settings.vector_store names it
    version = store.current()
    served = store.open(version.version, model_version)
    served.search(queries, k, SceneFilter(labels_all=["water"]))

A store is one module that defines an opener `open_<name>(settings) -> VectorStore` and is
registered in `STORES` below by name and import path (imported only when chosen, so a store
whose client is not installed costs nothing until it is asked for). Adding one (Qdrant,
pgvector) means writing that module and adding its line here; its settings go to
`service.settings.Settings`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from index.stores.base import (
    IndexModelMismatchError,
    IndexNotReadyError,
    ModelIndex,
    ReindexOptions,
    ReindexReport,
    ServedIndex,
    StoreBusyError,
    StoreVersion,
    UnknownSceneError,
    VectorStore,
    VectorStoreUnavailableError,
)
from index.stores.registry import STORES, UnknownStoreError, check_store_name
from index.stores.settings import FaissSettings, MilvusSettings, StoreSettings

if TYPE_CHECKING:
    from model.archive import Archive


def is_current(
    store: VectorStore,
    model_path: str | Path,
    archive_dir: str | Path | Archive,
    *,
    labels_csv: str | Path | None = None,
) -> bool:
    """Whether the store's version in service was built by this model over exactly the
    archive's scenes (then a reindex would build the same thing)."""
    from model.archive import as_archive
    from model.card import read_card

    try:
        current = store.current()
    except IndexNotReadyError:
        return False
    if current is None or current.model_version != read_card(model_path).version:
        return False
    archive = as_archive(archive_dir, labels_csv)
    wanted = np.sort(archive.ids_of())
    return bool(np.array_equal(wanted, store.ids(current.version)))


def open_store(settings: StoreSettings) -> VectorStore:
    """The store `settings.vector_store` names, opened with the settings (its own section
    is read by its opener). Nothing is connected or loaded until it is used."""
    module_name, opener = STORES[check_store_name(settings.vector_store)].split(":")
    store: VectorStore = getattr(importlib.import_module(module_name), opener)(settings)
    return store


__all__ = [
    "STORES",
    "FaissSettings",
    "IndexModelMismatchError",
    "IndexNotReadyError",
    "MilvusSettings",
    "ModelIndex",
    "ReindexOptions",
    "ReindexReport",
    "ServedIndex",
    "StoreBusyError",
    "StoreSettings",
    "StoreVersion",
    "UnknownSceneError",
    "UnknownStoreError",
    "VectorStore",
    "VectorStoreUnavailableError",
    "check_store_name",
    "is_current",
    "open_store",
]
