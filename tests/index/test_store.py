from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from index.stores.faiss_versions import IndexModelMismatchError, IndexNotReadyError, IndexStore
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
    assert versions == sorted(versions)  # names sort in the order they were written
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


def test_descriptors_load_back_as_kept_int8_or_float16_from_before(tmp_path: Path) -> None:
    """A version keeps int8 codes (the default) or float16 rows and says which; one built
    before int8 was offered (its manifest names no dtype) loads as float16; the service reads
    float32 unit rows from either."""
    import json

    from index.descriptors import encoded
    from index.stores.faiss import FaissVersions, Searcher

    index, _ = _index(200)
    ids = np.arange(200, dtype=np.int64) + 1
    rows = clustered_unit_vectors(200, 64, centres=5, seed=3)
    store = IndexStore(tmp_path)
    written = {}
    for dtype in ("int8", "float16"):
        kept = FullVectors(ids, encoded(rows, dtype))
        written[dtype] = store.write_version(
            index, model_version="m", factory="Flat", descriptors=kept
        )
        assert written[dtype].descriptors_dtype == dtype
    folder = tmp_path / "versions" / written["int8"].version
    assert (folder / "descriptors.npy").stat().st_size == 128 + 200 * 64  # a byte a value
    store.activate(written["int8"].version)
    got = Searcher(store.load()).descriptors(ids[[7, 0, 199]])
    assert got is not None and got.dtype == np.float32
    np.testing.assert_allclose(got, rows[[7, 0, 199]], atol=np.abs(rows).max() / 127)

    old = tmp_path / "versions" / written["float16"].version / "manifest.json"
    manifest = json.loads(old.read_text())
    del manifest["descriptors_dtype"]  # as a version from before the choice was written
    old.write_text(json.dumps(manifest))
    store.activate(written["float16"].version)
    loaded = store.load()
    assert loaded.manifest.descriptors_dtype is None and loaded.descriptors is not None
    np.testing.assert_array_equal(
        Searcher(loaded).descriptors(ids[:5]), rows[:5].astype(np.float16).astype(np.float32)
    )
    current = FaissVersions(tmp_path).current()
    assert current is not None and "descriptors kept (float16)" in current.description

    manifest["descriptors_dtype"] = "int8"  # a manifest that does not match its file
    old.write_text(json.dumps(manifest))
    with pytest.raises(IndexNotReadyError, match="holds float16 rows, its manifest names int8"):
        store.load()


MAPPED_PROBE = """
import sys
import numpy as np
from index.stores.faiss_versions import IndexStore
from index.vectors import search
store = IndexStore(sys.argv[1])
loaded = store.load(mapped=sys.argv[2] == "mapped")
queries = np.load(sys.argv[3])
np.save(sys.argv[4], search(loaded.index, queries, 10).ids)
rollup = dict(line.split(":") for line in open("/proc/self/smaps_rollup").read().splitlines()[1:])
print(int(rollup["Anonymous"].split()[0]))
"""


@pytest.mark.parametrize("factory", ["Flat", "IVF64,Flat", "HNSW16"])
def test_a_served_index_is_mapped_from_its_file_not_copied(tmp_path: Path, factory: str) -> None:
    """Workers serving one version share its vectors: loaded `mapped`, the vectors stay in
    the page cache (file-backed), and the answers are those of the index read whole."""
    import subprocess
    import sys

    n, dim = 40_000, 128  # 20 MB of vectors
    vectors = clustered_unit_vectors(n, dim, centres=200, seed=1)
    store = IndexStore(tmp_path / "index")
    manifest = store.write_version(
        build_index(factory, np.arange(n, dtype=np.int64), vectors),
        model_version="m",
        factory=factory,
    )
    store.activate(manifest.version)
    np.save(tmp_path / "queries.npy", vectors[:20])
    anonymous_kb, answers = {}, {}
    for how in ("mapped", "read"):
        out = tmp_path / f"{how}.npy"
        done = subprocess.run(
            [sys.executable, "-c", MAPPED_PROBE, str(store.root), how,
             str(tmp_path / "queries.npy"), str(out)],
            capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2],
        )  # fmt: skip
        anonymous_kb[how] = int(done.stdout.split()[-1])
        answers[how] = np.load(out)
    np.testing.assert_array_equal(answers["mapped"], answers["read"])
    # the vectors (20 MB) are private memory only when read whole
    assert anonymous_kb["read"] - anonymous_kb["mapped"] > 15_000, anonymous_kb
