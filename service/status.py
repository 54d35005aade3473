"""`grn status`: what is deployed, and what is out of date."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Engine

from index.stores import IndexNotReadyError, VectorStore, VectorStoreUnavailableError, open_store
from model.card import ModelFileError, read_card
from service.catalog import Catalog
from service.migrate import current_revision, head_revision
from service.settings import Settings, get_settings


def index_status(
    store: VectorStore, model_version: str | None, report: dict[str, Any], stale: list[str]
) -> np.ndarray | None:
    """Describe the store's version in service into `report["index"]`, add what is stale,
    and return the scene ids it holds (None when there is no readable version)."""
    try:
        current = store.current()
    except VectorStoreUnavailableError as exc:
        report["index"] = f"unreachable ({exc})"
        stale.append("the vector store does not answer")
        return None
    except IndexNotReadyError as exc:
        report["index"] = f"unreadable ({exc})"
        stale.append(f"the current index is damaged: run `{store.command('full')}`")
        return None
    if current is None:
        report["index"] = f"none ({store.describe_empty()})"
        stale.append(f"no index: run `{store.command('full')}`")
        return None
    report["index"] = current.description
    if model_version is not None and current.model_version != model_version:
        stale.append(
            f"the index was built by model {current.model_version}, the model file holds "
            f"{model_version}: run `{store.command('replace')}`"
        )
    try:
        return store.ids(current.version)
    except VectorStoreUnavailableError as exc:
        stale.append(f"the vector store does not answer ({exc})")
        return None


def collect_status(engine: Engine, settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or get_settings()
    stale: list[str] = []
    report: dict[str, Any] = {"database": engine.url.render_as_string(hide_password=True)}

    head = head_revision()
    try:
        revision = current_revision(engine)
    except Exception as exc:
        revision = None
        report["schema"] = f"unreachable ({type(exc).__name__})"
        stale.append("the database does not answer")
    else:
        report["schema"] = f"{revision or 'base'} (newest {head})"
        if revision != head:
            stale.append("the schema is not current: run `grn db upgrade`")

    model_version = None
    try:
        card = read_card(settings.model_path)
        model_version = card.version
        report["model"] = f"{card.version} ({card.backbone}, {settings.model_path})"
    except ModelFileError as exc:
        report["model"] = f"none ({exc})"
        stale.append("no model: run `grn train`")

    store = open_store(settings)
    try:
        index_ids = index_status(store, model_version, report, stale)
    finally:
        store.close()

    if revision == head:
        sql_ids = np.asarray(Catalog(engine).all_ids(), dtype=np.int64)
        report["scenes"] = f"{len(sql_ids)} in SQL"
        if index_ids is not None:
            unindexed = int((~np.isin(sql_ids, index_ids)).sum())
            unknown = int((~np.isin(index_ids, sql_ids)).sum())
            if unindexed:
                stale.append(
                    f"{unindexed} scenes in SQL are not indexed: "
                    f"run `{store.command('incremental')}`"
                )
            if unknown:
                stale.append(f"{unknown} indexed scenes are not in SQL: run `grn import`")
    report["stale"] = stale
    return report
