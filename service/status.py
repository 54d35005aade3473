"""`grn status`: what is deployed, and what is out of date."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Engine

from index.store import IndexNotReadyError, IndexStore
from model.card import ModelFileError, read_card
from service.catalog import Catalog
from service.migrate import current_revision, head_revision
from service.settings import get_settings


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

    if revision == head:
        sql_ids = np.asarray(Catalog(engine).all_ids(), dtype=np.int64)
        report["scenes"] = f"{len(sql_ids)} in SQL"
        if index_ids is not None:
            unindexed = int((~np.isin(sql_ids, index_ids)).sum())
            unknown = int((~np.isin(index_ids, sql_ids)).sum())
            if unindexed:
                stale.append(f"{unindexed} scenes in SQL are not indexed: run `grn reindex`")
            if unknown:
                stale.append(f"{unknown} indexed scenes are not in SQL: run `grn import`")
    report["stale"] = stale
    return report
