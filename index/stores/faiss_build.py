"""`grn reindex`: archive -> embeddings -> FAISS index version -> in service.

A full reindex embeds every scene with the model, builds the index the settings ask for
(or `auto`), measures its recall@10 against exact search on held-out queries, writes it as a
new version and switches `current` to it. An incremental reindex starts from the current
version, removes the scenes that left the archive and adds the new ones; it refuses to mix
models: an index built by another model needs a full reindex.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index.descriptors import DEFAULT as DEFAULT_DESCRIPTORS
from index.descriptors import check_dtype, encoded
from index.embedding_job import run_embedding_job
from index.given_vectors import given_for, nothing_embedded, take_given, with_taken
from index.row_files import GatheredRows, Rows
from index.stores import IndexModelMismatchError
from index.stores.faiss_versions import IndexStore, Manifest
from index.vectors import (
    FullVectors,
    SearchSettings,
    add_vectors,
    auto_factory,
    build_index,
    exact_search,
    find_ivf,
    is_lossy,
    recall_at_k,
    remove_vectors,
    search,
    stored_ids,
)
from model.archive import Archive, as_archive
from model.card import load_model, read_card
from model.inference import configure_cpu_threads, resolve_device
from model.rerank import keeps_descriptors, seen_content

RECALL_QUERIES = 1000


@dataclass
class ReindexSettings:
    factory: str = "auto"
    memory_budget_gb: float = 8.0
    keep: int = 3
    nprobe: int = 64
    ef_search: int = 128
    shard_size: int = 1024
    recall_queries: int = RECALL_QUERIES
    seed: int = 0
    descriptors: str = DEFAULT_DESCRIPTORS
    """How the version keeps the re-rank descriptors: int8 or float16 (index/descriptors.py)."""


@dataclass
class ReindexReport:
    manifest: Manifest
    added: int
    removed: int
    embedded: int
    seconds: float
    size_bytes: int
    pruned: list[str]
    broken: list[Any]

    @property
    def name(self) -> str:
        return f"index {self.manifest.version}"

    @property
    def count(self) -> int:
        return self.manifest.count

    def summary(self) -> str:
        m = self.manifest
        return (
            f"index {m.version} in service: {m.count} scenes, {m.factory}, model "
            f"{m.model_version}; added {self.added}, removed {self.removed}, embedded "
            f"{self.embedded}; recall@10 {m.stats['recall_at_10']:.4f}; {self.seconds:.1f} s; "
            f"{self.size_bytes / 2**20:.1f} MiB on disk"
            + (f"; pruned {len(self.pruned)} old versions" if self.pruned else "")
        )


def measure_recall(
    index: faiss.Index,
    ids: np.ndarray,
    vectors: Rows,
    settings: SearchSettings,
    queries: int,
    seed: int,
    k: int = 10,
    full_vectors: FullVectors | None = None,
) -> float:
    """recall@k against exact search, on a sample of the indexed vectors used as queries with
    each query's own entry left out of both result lists (so it is held out of the measure)."""
    if len(ids) <= k:
        return 1.0
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(ids), size=min(queries, len(ids)), replace=False)
    found = search(index, vectors[picks], k + 1, settings=settings, full_vectors=full_vectors)
    truth = exact_search(vectors, ids, vectors[picks], k + 1)

    def without_self(result: Any) -> tuple[np.ndarray, np.ndarray]:
        keep = [row != ids[p] for row, p in zip(result.ids, picks, strict=True)]
        rows = np.asarray([r[m][:k] for r, m in zip(result.ids, keep, strict=True)])
        scores = np.asarray([s[m][:k] for s, m in zip(result.scores, keep, strict=True)])
        return rows, scores

    found_ids, found_scores = without_self(found)
    truth_ids, truth_scores = without_self(truth)
    return recall_at_k(found_ids, truth_ids, k, found_scores, truth_scores)


def reindex(
    model_path: str | Path,
    archive_dir: str | Path | Archive,
    root: str | Path,
    *,
    labels_csv: str | Path | None = None,
    settings: ReindexSettings | None = None,
    incremental: bool = False,
    device: str = "auto",
    skip_broken: bool = False,
    progress: bool = True,
    names: Sequence[str] | None = None,
    ray_workers: int | None = None,
    ray_address: str | None = None,
) -> ReindexReport:
    """Build a new index version for the archive's scenes (or `names`) and put it in service.
    With `ray_workers`, the embedding runs on Ray with that many embedding actors (on the
    cluster at `ray_address` when given)."""
    settings = settings or ReindexSettings()
    check_dtype(settings.descriptors)  # before any scene is embedded
    configure_cpu_threads()
    start = time.perf_counter()
    torch_device = resolve_device(device)
    card = read_card(model_path)  # the network is loaded only if a scene needs embedding
    archive = as_archive(archive_dir, labels_csv)
    positions = archive.indices() if names is None else [archive.index_of(name) for name in names]
    ids = archive.ids_of(positions)
    store = IndexStore(root)
    search_settings = SearchSettings(nprobe=settings.nprobe, ef_search=settings.ef_search)

    parent = None
    parent_full: FullVectors | None = None
    parent_probabilities: FullVectors | None = None
    parent_descriptors: FullVectors | None = None
    seen_flags = seen_content(card, archive, positions)
    seen_ids = ids[seen_flags]  # of the archive's scenes: the version keeps those it holds
    if incremental:
        loaded = store.load(expected_model=card.version)
        index, parent, parent_full = loaded.index, loaded.manifest, loaded.full_vectors
        parent_probabilities, parent_descriptors = loaded.probabilities, loaded.descriptors
        present = stored_ids(index)
        new = ~np.isin(ids, present)
        gone = present[~np.isin(present, ids)]
        positions = [p for p, keep in zip(positions, new, strict=True) if keep]
        ids = ids[new]
    work = store.root / "work"
    # scenes whose archive carries this model's vectors are not embedded again
    folders = given_for(archive, card.version, card.vector_dim)
    taken = take_given(folders, ids, keeps_descriptors(card))
    rest = ~taken.mask
    embedded = nothing_embedded(card, keeps_descriptors(card))
    if rest.any():
        embedded = run_embedding_job(
            load_model(model_path, torch_device)[0], card, archive,
            [p for p, r in zip(positions, rest, strict=True) if r], ids[rest].tolist(), work,
            device=torch_device, shard_size=settings.shard_size, skip_broken=skip_broken,
            progress=progress, ray_workers=ray_workers, model_path=model_path,
            ray_address=ray_address,
            descriptors=keeps_descriptors(card),
        )  # fmt: skip
    embedded = with_taken(embedded, taken)
    build_start = time.perf_counter()
    if parent is not None:
        removed = remove_vectors(index, gone) if len(gone) else 0
        if len(embedded.ids):
            add_vectors(index, embedded.ids, embedded.embeddings)
        factory = parent.factory
        added = len(embedded.ids)
    else:
        count = len(embedded.ids)
        factory = (
            auto_factory(count, card.vector_dim, int(settings.memory_budget_gb * 2**30))
            if settings.factory == "auto"
            else settings.factory
        )
        index = build_index(factory, embedded.ids, embedded.embeddings, seed=settings.seed)
        added, removed = count, 0
    build_seconds = time.perf_counter() - build_start
    full = None
    if is_lossy(index):
        full = _updated_rows(
            parent_full, gone if parent else None, embedded.ids, embedded.embeddings
        )
    probabilities = None
    if parent is None or parent_probabilities is not None:  # else the parent's are unknown
        probabilities = _updated_rows(
            parent_probabilities, gone if parent else None, embedded.ids, embedded.probabilities
        )
    descriptors = None
    # None: a model that keeps none, or Ray shards written before descriptors were
    if embedded.descriptors is not None and (parent is None or parent_descriptors is not None):
        descriptors = _updated_rows(
            parent_descriptors, gone if parent else None, embedded.ids, embedded.descriptors,
            dtype=settings.descriptors, convert=partial(encoded, dtype=settings.descriptors),
        )  # fmt: skip
    recall = _recall_of(index, full, parent, embedded, search_settings, settings)
    stats = {
        "recall_at_10": recall,
        "build_seconds": build_seconds,
        "embed_images_per_s": embedded.images_per_s,
        "embedded": embedded.computed,
        "added": added,
        "removed": removed,
        "broken_files": [b.__dict__ for b in embedded.broken],
        "nprobe": settings.nprobe,
        "ef_search": settings.ef_search,
        "seen_share": float(seen_flags.mean()) if len(seen_flags) else None,
    }
    manifest = store.write_version(
        index,
        model_version=card.version,
        factory=factory,
        parent=parent.version if parent else None,
        stats=stats,
        full_vectors=full,
        probabilities=probabilities,
        descriptors=descriptors,
        seen=seen_ids,
    )
    store.activate(manifest.version)
    pruned = store.prune(settings.keep)
    shutil.rmtree(work / card.version, ignore_errors=True)
    return ReindexReport(
        manifest=manifest,
        added=added,
        removed=removed,
        embedded=embedded.computed,
        seconds=time.perf_counter() - start,
        size_bytes=store.size_on_disk(manifest.version),
        pruned=pruned,
        broken=embedded.broken,
    )


def _updated_rows(
    parent: FullVectors | None,
    gone: np.ndarray | None,
    ids: np.ndarray,
    rows: Rows,
    dtype: Any = np.float32,
    convert: Callable[[np.ndarray], np.ndarray] | None = None,
) -> FullVectors:
    """Rows per scene of the new version (full vectors, probabilities or descriptors): the
    parent's, less the removed, plus the new scenes' `rows`, in id order, as `dtype` (each
    source's rows through `convert` first when given: the descriptors' coding). Nothing is
    read here: the version's writer reads them a chunk at a time (`index.row_files`)."""
    parts: list[Rows] = [rows]
    if parent is not None:
        keep = np.ones(len(parent.ids), bool) if gone is None else ~np.isin(parent.ids, gone)
        parts.insert(0, GatheredRows.of(parent.vectors).taken(np.flatnonzero(keep)))
        ids = np.concatenate([parent.ids[keep], ids])
    order = np.argsort(ids, kind="stable")
    return FullVectors(ids[order], GatheredRows.joined(parts, dtype, convert).taken(order))


def _recall_of(
    index: faiss.Index,
    full: FullVectors | None,
    parent: Manifest | None,
    embedded: Any,
    search_settings: SearchSettings,
    settings: ReindexSettings,
) -> float:
    """Recall of the new index as the service will search it. The exact vectors come from
    the full vectors of a compressed index, the embeddings of a full build, or else (an
    incremental build of an uncompressed index) the index itself."""
    measure = partial(
        measure_recall,
        index,
        settings=search_settings,
        queries=settings.recall_queries,
        seed=settings.seed,
        full_vectors=full,
    )
    if full is not None:
        return measure(full.ids, full.vectors)
    if parent is None:
        return measure(embedded.ids, embedded.embeddings)
    all_ids = stored_ids(index)
    ivf = find_ivf(index)
    if ivf is not None:
        ivf.make_direct_map(True)
    try:
        vectors = index.reconstruct_batch(all_ids)
    finally:
        if ivf is not None:
            ivf.make_direct_map(False)
    return measure(all_ids, vectors)


__all__ = ["IndexModelMismatchError", "ReindexReport", "ReindexSettings", "reindex"]
