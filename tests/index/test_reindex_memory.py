"""A reindex's memory does not grow with the archive: the rows per scene stay in files while
the index version is built from the embedding shards (`index.row_files`), and an archive
folder's listing is held as columns (`model.archive_columns`), not an object a scene."""

from __future__ import annotations

import csv
import gc
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from index.embedding_job import job_folder, save_shard
from index.given_vectors import FOLDER, GivenVectorsWriter
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


def _carried_archive(model: Path, root: Path, scenes: int) -> Path:
    """An archive folder of `scenes` scenes as `grn synth` writes them (a footprint and an
    acquisition date each, images in folders) that carries the model's vectors (random), so
    a reindex reads its labels.csv and embeds none; its image files are empty."""
    card = read_card(model)
    labels = len(card.label_names)
    folder = root / "archive"
    names = [f"synth0_{n:07d}" for n in range(scenes)]
    rng = np.random.default_rng(scenes)
    folder.mkdir(parents=True)
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "scene", "split", "footprint", "acquired", *card.label_names])
        for n, name in enumerate(names):
            images = folder / "images" / f"{n // 1000:05d}"
            if n % 1000 == 0:
                images.mkdir(parents=True)
            (images / f"{name}.jpg").touch()
            lon, lat = 4 + n * 1e-3, 44 + n * 1e-4
            ring = [[lon, lat], [lon + 1e-3, lat], [lon + 1e-3, lat + 1e-3], [lon, lat + 1e-3]]
            footprint = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
            writer.writerow([
                name, f"folder{n % 21}", ("train", "val", "test")[n % 3],
                json.dumps(footprint), f"2024-05-{1 + n % 28:02d}T10:{n % 60:02d}:00Z",
                *rng.integers(0, 2, labels).tolist(),
            ])  # fmt: skip
    vectors = rng.standard_normal((scenes, card.vector_dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    given = GivenVectorsWriter(
        folder / FOLDER, scenes, model_version=card.version, vector_dim=card.vector_dim,
        label_names=list(card.label_names), descriptor_dim=None, made_by={"test": True},
    )  # fmt: skip
    ids = np.asarray([scene_id(name) for name in names], np.int64)
    given.add(0, ids, vectors, rng.random((scenes, labels), dtype=np.float32), None)
    given.close()
    return folder


def _peak_bytes(model: Path, root: Path, scenes: int, factory: str, source: str = "shards") -> int:
    """The peak of Python's and numpy's allocations (tracemalloc) during a full reindex of
    `scenes` scenes, above what was allocated before it: an `Archive` whose embedding
    shards are written (`shards`), or an archive folder carrying its vectors (`carried`,
    read by the reindex itself)."""
    archive: Archive | Path = (
        _embedded_archive(model, root, scenes)
        if source == "shards"
        else _carried_archive(model, root, scenes)
    )
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


def test_a_reindex_of_an_archive_folder_holds_no_object_a_scene(model, tmp_path) -> None:
    """The same from an archive folder that carries its vectors (`grn synth`'s, where 1M
    scenes missed the 3 GB bound): its listing was an `ArchiveEntry` a scene (a name,
    `Path`, labels tuple, shapely footprint and date: some 2 KB, docs/scaling.md) and is
    now columns (a few hundred bytes), read row by row rather than as a list of rows."""
    small, large = 1_500, 6_000
    low = _peak_bytes(model, tmp_path / "small", small, "Flat", source="carried")
    high = _peak_bytes(model, tmp_path / "large", large, "Flat", source="carried")
    per_scene = (high - low) / (large - small)
    assert per_scene < 600, (low, high, per_scene)
    loaded = IndexStore(tmp_path / "large").load()
    assert loaded.manifest.count == large and loaded.manifest.stats["embedded"] == 0
