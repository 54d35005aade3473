from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from index.store import IndexModelMismatchError, IndexNotReadyError, IndexStore
from index.synthetic import clustered_unit_vectors
from index.vectors import FullVectors, VectorFile, build_index, search


def _index(n: int = 500, seed: int = 0):
    vectors = clustered_unit_vectors(n, 32, centres=10, seed=seed)
    return build_index("Flat", np.arange(n, dtype=np.int64) + 1, vectors), vectors


def test_versions_switch_atomically_and_load_back(tmp_path: Path) -> None:
    store = IndexStore(tmp_path)
    with pytest.raises(IndexNotReadyError, match="grn reindex"):
        store.load()
    index, vectors = _index()
    first = store.write_version(index, model_version="m1", factory="Flat")
    assert store.current_version() is None  # written, not yet in service
    store.activate(first.version)
    loaded = store.load(expected_model="m1")
    assert loaded.manifest == first and loaded.index.ntotal == 500
    assert first.count == 500 and first.dim == 32 and first.metric == "inner_product"
    assert search(loaded.index, vectors[:1], 1).ids[0, 0] == 1
    ids = np.load(tmp_path / "versions" / first.version / "ids.npy")
    np.testing.assert_array_equal(ids, np.arange(500) + 1)


def test_model_mismatch_is_refused(tmp_path: Path) -> None:
    store = IndexStore(tmp_path)
    index, _ = _index()
    store.activate(store.write_version(index, model_version="m1", factory="Flat").version)
    with pytest.raises(IndexModelMismatchError, match=r"built from model m1.*m2"):
        store.load(expected_model="m2")


def test_damaged_index_file_is_refused(tmp_path: Path) -> None:
    store = IndexStore(tmp_path)
    index, _ = _index()
    manifest = store.write_version(index, model_version="m1", factory="Flat")
    store.activate(manifest.version)
    path = tmp_path / "versions" / manifest.version / "index.faiss"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexNotReadyError, match="damaged"):
        store.load()


def test_a_version_without_manifest_is_never_activated(tmp_path: Path) -> None:
    store = IndexStore(tmp_path)
    (tmp_path / "versions" / "half-written").mkdir(parents=True)
    with pytest.raises(IndexNotReadyError, match="manifest"):
        store.activate("half-written")


def test_prune_keeps_the_newest_and_the_current(tmp_path: Path) -> None:
    store = IndexStore(tmp_path)
    index, _ = _index(100)
    versions = []
    for _ in range(5):
        versions.append(store.write_version(index, model_version="m", factory="Flat").version)
        time.sleep(0.01)
    store.activate(versions[0])  # an old version may be the one in service (a rollback)
    leftover = tmp_path / "versions" / "99999999T000000-killed"
    leftover.mkdir()
    fresh = tmp_path / "versions" / "99999999T000000-running"
    fresh.mkdir()
    old = time.time() - 7200
    os.utime(leftover, (old, old))
    removed = store.prune(keep=2)
    assert removed == sorted([*versions[1:3], leftover.name])
    assert store.complete_versions() == sorted([versions[0], *versions[3:]])
    assert fresh.is_dir()  # a build that may still be running elsewhere keeps its folder
    assert store.load().manifest.version == versions[0]


def test_a_compressed_index_keeps_its_full_vectors(tmp_path: Path) -> None:
    vectors = clustered_unit_vectors(3000, 32, centres=20, seed=2)
    ids = np.arange(3000, dtype=np.int64)[::-1].copy()  # unsorted on purpose
    index = build_index("IVF16,PQ8x4", ids, vectors)
    store = IndexStore(tmp_path)
    manifest = store.write_version(
        index,
        model_version="m",
        factory="IVF16,PQ8x4",
        full_vectors=FullVectors.from_unsorted(ids, vectors),
    )
    store.activate(manifest.version)
    loaded = store.load()
    assert loaded.full_vectors is not None
    assert isinstance(loaded.full_vectors.vectors, VectorFile)  # read with pread, not mapped
    np.testing.assert_array_equal(
        loaded.full_vectors.vectors[loaded.full_vectors.rows(ids[:5])], vectors[:5]
    )
    path = tmp_path / "versions" / manifest.version / "vectors.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexNotReadyError, match=r"vectors\.npy is damaged"):
        store.load()
    with pytest.raises(ValueError, match="exactly the index's ids"):
        store.write_version(
            index,
            model_version="m",
            factory="x",
            full_vectors=FullVectors.from_unsorted(ids[:10], vectors[:10]),
        )
