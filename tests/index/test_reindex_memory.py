"""A reindex's memory does not grow with the archive: the rows per scene stay in files while
the index version is built from the embedding shards (`index.row_files`)."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from index.embedding_job import job_folder, save_shard
from index.stores.faiss_build import ReindexSettings, reindex
from index.stores.faiss_versions import IndexStore
from model.archive import Archive, ArchiveEntry, scene_id
from model.card import read_card
from model.train import fit

SHARD = 500


@pytest.fixture(scope="module")
def model(tiny_config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("model")
    fit(tiny_config(run))
    return run


def _embedded_archive(model: Path, root: Path, scenes: int) -> Archive:
    """An archive of `scenes` scenes whose embedding shards are all written (random unit
    vectors and probabilities) in ROOT/work, so a reindex reads them back and embeds none;
    its image files do not exist."""
    card = read_card(model)
    labels = len(card.label_names)
    entries = [
        ArchiveEntry(f"scene{n:06d}", "f", "train", (0,) * labels, root / "none.jpg")
        for n in range(scenes)
    ]
    archive = Archive(root, list(card.label_names), entries)
    ids = [scene_id(entry.name) for entry in entries]
    names = [entry.name for entry in entries]
    folder = job_folder(root / "work", card, ids, names, SHARD, descriptors=False)
    rng = np.random.default_rng(scenes)
    for number, first in enumerate(range(0, scenes, SHARD)):
        count = min(SHARD, scenes - first)
        vectors = rng.standard_normal((count, card.vector_dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        save_shard(
            folder / f"shard-{number:05d}.npz",
            np.asarray(ids[first : first + count], np.int64),
            embeddings=vectors,
            probabilities=rng.random((count, labels), dtype=np.float32),
        )
    return archive


def _peak_bytes(model: Path, root: Path, scenes: int, factory: str) -> int:
    """The peak of Python's and numpy's allocations (tracemalloc) during a full reindex of
    `scenes` embedded scenes, above what was allocated before it."""
    archive = _embedded_archive(model, root, scenes)
    gc.collect()
    tracemalloc.start()
    try:
        report = reindex(
            model, archive, root, progress=False, settings=ReindexSettings(
                shard_size=SHARD, factory=factory),
        )  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.embedded == 0 and report.manifest.count == scenes
    return peak


@pytest.mark.parametrize("factory", ["Flat", "IVF16,PQ4"])
def test_the_build_from_shards_holds_no_rows_per_scene(model, tmp_path, factory) -> None:
    """Four times the scenes, about the same peak: per scene, the build keeps a few ids and
    orders (tens of bytes), not the scenes' rows (the vectors and probabilities, hundreds of
    bytes each copy), nor exact search's scores of the recall queries against every scene
    (16 KB a scene for 1,000 queries, as before)."""
    small, large = 1_500, 6_000
    low = _peak_bytes(model, tmp_path / "small", small, factory)
    high = _peak_bytes(model, tmp_path / "large", large, factory)
    card = read_card(model)
    row_bytes = 4 * (card.vector_dim + len(card.label_names))
    per_scene = (high - low) / (large - small)
    assert per_scene < min(row_bytes, 1024), (low, high, per_scene, row_bytes)
    # what was built from the files is what the shards held
    loaded = IndexStore(tmp_path / "large").load()
    assert loaded.manifest.count == large and loaded.probabilities is not None
    assert np.all(np.diff(loaded.probabilities.ids) > 0)
