"""`grn status`: what is deployed, and what is out of date.

`collect_status` answers a JSON-ready report with numbers and names (`grn status --json`);
`describe` turns it into the lines `grn status` prints."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from index.results import in_sorted
from index.stores import IndexNotReadyError, VectorStore, VectorStoreUnavailableError, open_store
from model.card import ModelFileError, read_card
from service.settings import Settings, get_settings
from service.storage.catalog import Catalog
from service.storage.db import SceneVector
from service.storage.migrate import current_revision, head_revision
from service.storage.render_cache import usage


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
    model_path = settings.model.model_path
    try:
        card = read_card(model_path)
        model_version = card.version
        report["model"] = {
            "version": card.version, "backbone": card.backbone, "path": str(model_path),
        }  # fmt: skip
    except ModelFileError as exc:
        report["model"] = {"error": f"none ({exc})", "path": str(model_path)}
        stale.append("no model: run `grn train`")

    store = open_store(settings.store)
    try:
        index_ids = index_status(store, model_version, report, stale)
    finally:
        store.close()

    if revision == head:
        sql_ids = Catalog(engine).id_array()
        report["scenes"] = {"sql": len(sql_ids)}
        if index_ids is not None:  # both sorted: binary searches, not np.isin's sorts
            absent = sql_ids[~in_sorted(index_ids, sql_ids)]
            written = np.sort(written_ids(engine, model_version))
            pending = int(in_sorted(written, absent).sum())
            unindexed = len(absent) - pending
            unknown = int((~in_sorted(sql_ids, index_ids)).sum())
            report["scenes"] |= {
                "indexed": len(index_ids), "not_indexed": unindexed, "unknown_to_sql": unknown,
                "added_not_folded": pending,
            }  # fmt: skip
            fold = f"{store.command('incremental')} --catalog"
            if unindexed:
                stale.append(f"{unindexed} scenes in SQL are not indexed: run `{fold}`")
            if unknown:
                stale.append(
                    f"{unknown} indexed scenes are not in SQL: run `grn import` if SQL lost "
                    f"them, or `{fold}` to drop them (searches leave them out already)"
                )
    files = settings.files
    held = usage(files.thumbnail_dir)
    report["render_cache"] = {
        "path": str(files.thumbnail_dir), "bytes": held.bytes, "files": held.files,
        "max_bytes": files.render_cache_max_bytes, "max_files": files.render_cache_max_files,
    }  # fmt: skip
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
        if scenes.get("added_not_folded"):
            text += (
                f", {scenes['added_not_folded']} added through the API and searched before "
                "an index holds them"
            )
        lines.append(("scenes", text))
    cache = report["render_cache"]
    lines.append(
        (
            "render cache",
            f"{cache['bytes'] / 2**20:.1f} MiB in {cache['files']} files of "
            f"{cache['max_bytes'] / 2**20:.0f} MiB and {cache['max_files']} files "
            f"({cache['path']})",
        )
    )
    return lines


def written_ids(engine: Engine, model_version: str | None) -> np.ndarray:
    """The scenes whose embedding by `model_version` SQL keeps (added through the API: the
    service searches them before an index holds them)."""
    if model_version is None:
        return np.zeros(0, dtype=np.int64)
    with Session(engine) as session:
        found = session.scalars(
            select(SceneVector.scene_id).where(SceneVector.model_version == model_version)
        ).all()
    return np.asarray(found, dtype=np.int64)
