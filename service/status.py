"""`grn status`: what is deployed, and what is out of date."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Engine

from index.store import IndexNotReadyError, IndexStore
from model.card import ModelFileError, read_card
from service.catalog import Catalog
from service.migrate import current_revision, head_revision
from service.settings import Settings, get_settings


def _faiss_status(
    settings: Settings, model_version: str | None, report: dict[str, Any], stale: list[str]
) -> np.ndarray | None:
    store = IndexStore(settings.index_root)
    index_ids = None
    version = store.current_version()
    if version is None:
        report["index"] = f"none under {settings.index_root}"
        stale.append("no index: run `grn reindex`")
    else:
        try:
            manifest = store.manifest(version)
        except IndexNotReadyError as exc:
            report["index"] = f"{version} (unreadable: {exc})"
            stale.append("the current index is damaged: run `grn reindex`")
        else:
            index_ids = store.ids(version)
            report["index"] = (
                f"{version} ({manifest.factory}, {manifest.count} scenes, "
                f"model {manifest.model_version})"
            )
            if model_version is not None and manifest.model_version != model_version:
                stale.append(
                    f"the index was built by model {manifest.model_version}, the model file "
                    f"holds {model_version}: run `grn reindex`"
                )

    return index_ids


def _milvus_status(
    settings: Settings, model_version: str | None, report: dict[str, Any], stale: list[str]
) -> np.ndarray | None:
    from index.backends import (
        VectorStoreUnavailableError,
        collection_ids,
        collection_model,
        milvus_answering,
        resolve_collection,
    )

    uri, alias = settings.milvus_uri, settings.milvus_collection
    try:
        with milvus_answering(uri):
            from pymilvus import MilvusClient

            client = MilvusClient(uri=uri, token=settings.milvus_token.get_secret_value())
            try:
                live = resolve_collection(client, alias)
                if live is None:
                    report["index"] = f"none: Milvus at {uri} has no collection {alias}"
                    stale.append(f"no index: run `grn reindex --milvus {uri}`")
                    return None
                built_by = collection_model(client, live)
                index_ids = collection_ids(client, live)
            finally:
                client.close()
    except VectorStoreUnavailableError as exc:
        report["index"] = f"unreachable ({exc})"
        stale.append("the Milvus vector store does not answer")
        return None
    report["index"] = (
        f"{alias} -> {live} (Milvus at {uri}, {len(index_ids)} scenes, model {built_by})"
    )
    if model_version is not None and built_by != model_version:
        stale.append(
            f"the collection was built by model {built_by}, the model file holds "
            f"{model_version}: run `grn reindex --milvus {uri} --replace`"
        )
    return index_ids


def collect_status(engine: Engine) -> dict[str, Any]:
    settings = get_settings()
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

    if settings.vector_store == "milvus":
        index_ids = _milvus_status(settings, model_version, report, stale)
    else:
        index_ids = _faiss_status(settings, model_version, report, stale)

    if revision == head:
        sql_ids = np.asarray(Catalog(engine).all_ids(), dtype=np.int64)
        report["scenes"] = f"{len(sql_ids)} in SQL"
        if index_ids is not None:
            unindexed = int((~np.isin(sql_ids, index_ids)).sum())
            unknown = int((~np.isin(index_ids, sql_ids)).sum())
            if unindexed:
                reindex = (
                    f"grn reindex --milvus {settings.milvus_uri} --incremental"
                    if settings.vector_store == "milvus"
                    else "grn reindex"
                )
                stale.append(f"{unindexed} scenes in SQL are not indexed: run `{reindex}`")
            if unknown:
                stale.append(f"{unknown} indexed scenes are not in SQL: run `grn import`")
    report["stale"] = stale
    return report
