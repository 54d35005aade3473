"""`grn reindex --milvus URI`: an archive's embeddings into a Milvus collection (with the
labels and scene folder that filters need), fully or incrementally. The embedding shards are
the FAISS job's (resumable, per model version), so a killed job resumes."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.backends import MilvusStore, SceneMeta
from index.embedding_job import run_embedding_job
from index.job import scene_id
from model.archive import load_archive
from model.card import load_model
from model.inference import configure_cpu_threads
from model.train import resolve_device


@dataclass
class MilvusReport:
    collection: str
    count: int
    added: int
    removed: int
    seconds: float


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
) -> MilvusReport:
    """Fill the collection with the archive's scenes. Full (default): the collection must be
    new or empty (`replace` drops it first). Incremental: add the scenes it lacks and remove
    those that left the archive. A collection of another model is refused. `names` limits
    the scenes to those image stems (the rest count as gone)."""
    configure_cpu_threads()
    start = time.perf_counter()
    torch_device = resolve_device(device)
    net, card = load_model(model_path, torch_device)
    archive = load_archive(archive_dir, labels_csv)
    store = MilvusStore(uri, collection, card.embedding_dim, card.version, replace=replace)
    chosen = (
        list(range(len(archive.scenes)))
        if names is None
        else [archive.index_of(name) for name in names]
    )
    ids = np.asarray([scene_id(archive.scenes[i].name) for i in chosen], dtype=np.int64)
    present = store.ids()
    if len(present) and not incremental:
        raise ValueError(
            f"Milvus collection {collection} already holds {len(present)} scenes: use "
            "--incremental to update it or --replace to rebuild it"
        )
    new = ~np.isin(ids, present)
    gone = present[~np.isin(present, ids)]
    positions = [chosen[int(p)] for p in np.flatnonzero(new)]
    embedded = run_embedding_job(
        net,
        card,
        archive,
        positions,
        ids[new].tolist(),
        Path(work),
        device=torch_device,
        progress=progress,
    )
    metas = [
        SceneMeta(
            labels=tuple(
                name
                for name, flag in zip(archive.label_names, archive.scenes[p].labels, strict=True)
                if flag
            ),
            scene=archive.scenes[p].scene,
        )
        for p in positions
    ]
    if len(embedded.ids):
        store.add(embedded.ids, embedded.embeddings, metas)
    removed = store.remove(gone) if len(gone) else 0
    shutil.rmtree(Path(work) / card.version, ignore_errors=True)
    count = store.count()
    store.close()
    return MilvusReport(collection, count, len(embedded.ids), removed, time.perf_counter() - start)
