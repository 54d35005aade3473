"""`grn reindex --milvus URI`: an archive's embeddings into a Milvus collection (with the
labels and scene folder that filters need), fully or incrementally. The embedding shards are
the FAISS job's (resumable, per model version), so a killed job resumes.

The name searched (`scenes` by default) is a Milvus alias. A full build fills a new
collection `<name>_v<time>` and then switches the alias to it in one call, as the FAISS job
switches its `current` pointer: the service searching the alias never sees a half-built
collection, and a build killed midway leaves the previous one in service (the orphan is
dropped by the next build)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index.backends import (
    MilvusStore,
    SceneMeta,
    resolve_collection,
    version_name,
    version_time,
)
from index.embedding_job import embed_for_index
from model.archive import load_archive, scene_id
from model.card import load_model
from model.faults import kill_point
from model.inference import configure_cpu_threads, resolve_device


@dataclass
class MilvusReport:
    collection: str
    """The name searched: an alias of the version below."""
    version: str
    """The collection now behind the alias."""
    count: int
    added: int
    removed: int
    seconds: float


def versions_of(client: Any, collection: str) -> list[str]:
    """The collections built for an alias, oldest first (their names carry the time)."""
    stamps = {name: version_time(name, collection) for name in client.list_collections()}
    return sorted((n for n, t in stamps.items() if t is not None), key=lambda n: stamps[n] or 0)


def switch_alias(client: Any, collection: str, target: str) -> None:
    """Point the alias `collection` at `target` in one step. A plain collection of that name
    (a layout before aliases) is dropped first: that is the one moment without it."""
    if collection in client.list_aliases().get("aliases", []):
        client.alter_alias(target, collection)
        return
    if client.has_collection(collection):
        client.drop_collection(collection)
    client.create_alias(target, collection)


def prune_versions(client: Any, collection: str, keep: Sequence[str | None]) -> list[str]:
    """Drop the alias's versions other than `keep`: after a switch, the one in service and
    the one before it (a service that has not polled yet may still be searching it). What
    goes are older versions and unfinished builds (a build killed before its switch)."""
    dropped = [name for name in versions_of(client, collection) if name not in keep]
    for name in dropped:
        client.drop_collection(name)
    return dropped


def reindex_milvus(
    model_path: str | Path,
    archive_dir: str | Path,
    uri: str,
    collection: str,
    work: str | Path,
    *,
    labels_csv: str | Path | None = None,
    incremental: bool = False,
    replace: bool = False,
    device: str = "auto",
    progress: bool = True,
    names: Sequence[str] | None = None,
    token: str = "",
    ray_workers: int | None = None,
) -> MilvusReport:
    """Fill the alias `collection` with the archive's scenes.

    Full (default): a new collection version is built beside the one in service and the
    alias is switched to it when it is complete, so searches never see a half-built
    collection and a killed build leaves the previous one in service. The alias must be new
    or empty unless `replace` (a rebuild, also what a new model needs). Incremental: add the
    scenes the collection in service lacks and remove those that left the archive, in place.
    A collection of another model is refused. `names` limits the scenes to those image stems
    (the rest count as gone)."""
    from pymilvus import MilvusClient

    configure_cpu_threads()
    start = time.perf_counter()
    torch_device = resolve_device(device)
    net, card = load_model(model_path, torch_device)
    archive = load_archive(archive_dir, labels_csv)
    client = MilvusClient(uri=uri, token=token)
    try:
        live = resolve_collection(client, collection)
        in_place = incremental and live is not None
        if live is not None and not replace:
            current = MilvusStore(uri, collection, card.embedding_dim, card.version, client=client)
            held = current.count()
            if held and not incremental:
                raise ValueError(
                    f"Milvus collection {collection} already holds {held} scenes: use "
                    "--incremental to update it or --replace to rebuild it"
                )
        target = live if in_place and live is not None else version_name(collection)
        store = MilvusStore(uri, target, card.embedding_dim, card.version, client=client)
        chosen = (
            list(range(len(archive.scenes)))
            if names is None
            else [archive.index_of(name) for name in names]
        )
        ids = np.asarray([scene_id(archive.scenes[i].name) for i in chosen], dtype=np.int64)
        present = store.ids()
        new = ~np.isin(ids, present)
        gone = present[~np.isin(present, ids)]
        positions = [chosen[int(p)] for p in np.flatnonzero(new)]
        embedded = embed_for_index(
            model_path,
            net,
            card,
            archive,
            positions,
            ids[new].tolist(),
            Path(work),
            device=torch_device,
            ray_workers=ray_workers,
            progress=progress,
        )
        metas = [
            SceneMeta(
                labels=tuple(
                    name
                    for name, flag in zip(
                        archive.label_names, archive.scenes[p].labels, strict=True
                    )
                    if flag
                ),
                scene=archive.scenes[p].scene,
            )
            for p in positions
        ]
        if len(embedded.ids):
            store.add(embedded.ids, embedded.embeddings, metas)
        removed = store.remove(gone) if len(gone) else 0
        count = store.count()
        if not in_place:
            client.flush(target)
            kill_point("milvus-filled")
            switch_alias(client, collection, target)
            prune_versions(client, collection, keep=[target, live])
        shutil.rmtree(Path(work) / card.version, ignore_errors=True)
    finally:
        client.close()
    return MilvusReport(
        collection, target, count, len(embedded.ids), removed, time.perf_counter() - start
    )
