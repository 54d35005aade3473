"""`grn status`: what is deployed, and what is out of date.

`collect_status` answers a JSON-ready report with numbers and names (`grn status --json`);
`describe` turns it into the lines `grn status` prints."""

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
    index: dict[str, Any] = {"store": store.kind, "location": store.location, "version": None}
    report["index"] = index
    try:
        current = store.current()
    except VectorStoreUnavailableError as exc:
        index["error"] = f"unreachable ({exc})"
        stale.append("the vector store does not answer")
        return None
    except IndexNotReadyError as exc:
        index["error"] = f"unreadable ({exc})"
        stale.append(f"the current index is damaged: run `{store.command('full')}`")
        return None
    if current is None:
        index["error"] = f"none ({store.describe_empty()})"
        stale.append(f"no index: run `{store.command('full')}`")
        return None
    index |= {
        "version": current.version,
        "model_version": current.model_version,
        "description": current.description,
    }
    if model_version is not None and current.model_version != model_version:
        stale.append(
            f"the index was built by model {current.model_version}, the model file holds "
            f"{model_version}: run `{store.command('replace')}`"
        )
    try:
        ids = store.ids(current.version)
    except VectorStoreUnavailableError as exc:
        stale.append(f"the vector store does not answer ({exc})")
        return None
    index["scenes"] = len(ids)
    return ids


def collect_status(engine: Engine, settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or get_settings()
    stale: list[str] = []
    report: dict[str, Any] = {"database": engine.url.render_as_string(hide_password=True)}

    head = head_revision()
    try:
        revision = current_revision(engine)
    except Exception as exc:
        revision = None
        report["schema"] = {"error": f"unreachable ({type(exc).__name__})", "newest": head}
        stale.append("the database does not answer")
    else:
        report["schema"] = {"revision": revision, "newest": head, "current": revision == head}
        if revision != head:
            stale.append("the schema is not current: run `grn db upgrade`")

    model_version = None
    try:
        card = read_card(settings.model_path)
        model_version = card.version
        report["model"] = {
            "version": card.version, "backbone": card.backbone, "path": str(settings.model_path),
        }  # fmt: skip
    except ModelFileError as exc:
        report["model"] = {"error": f"none ({exc})", "path": str(settings.model_path)}
        stale.append("no model: run `grn train`")

    store = open_store(settings)
    try:
        index_ids = index_status(store, model_version, report, stale)
    finally:
        store.close()

    if revision == head:
        sql_ids = np.asarray(Catalog(engine).all_ids(), dtype=np.int64)
        report["scenes"] = {"sql": len(sql_ids)}
        if index_ids is not None:
            unindexed = int((~np.isin(sql_ids, index_ids)).sum())
            unknown = int((~np.isin(index_ids, sql_ids)).sum())
            report["scenes"] |= {
                "indexed": len(index_ids), "not_indexed": unindexed, "unknown_to_sql": unknown,
            }  # fmt: skip
            if unindexed:
                stale.append(
                    f"{unindexed} scenes in SQL are not indexed: "
                    f"run `{store.command('incremental')}`"
                )
            if unknown:
                stale.append(f"{unknown} indexed scenes are not in SQL: run `grn import`")
    report["stale"] = stale
    return report


def describe(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The report as (what, words) lines for people."""
    lines = [("database", report["database"])]
    schema = report["schema"]
    lines.append(
        (
            "schema",
            schema.get("error") or f"{schema['revision'] or 'base'} (newest {schema['newest']})",
        )
    )
    model = report["model"]
    lines.append(
        (
            "model",
            model.get("error") or f"{model['version']} ({model['backbone']}, {model['path']})",
        )
    )
    index = report["index"]
    lines.append(("index", index.get("error") or index["description"]))
    if "scenes" in report:
        scenes = report["scenes"]
        text = f"{scenes['sql']} in SQL"
        if "indexed" in scenes:
            text += f", {scenes['indexed']} in the index"
        lines.append(("scenes", text))
    return lines
