"""The vector-store seam: the factory opens the store the settings name, and FAISS and Milvus
answer the same interface (current version, ids, open, search with native filters, the
reindex command to suggest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index.filters import SceneFilter, SceneMeta
from index.results import IndexSearchError
from index.stores import (
    STORES,
    FaissSettings,
    MilvusSettings,
    StoreBusyError,
    StoreSettings,
    UnknownStoreError,
    open_store,
)
from index.stores.faiss import FaissVersions, Searcher
from index.stores.faiss_versions import IndexStore
from index.synthetic import clustered_unit_vectors
from index.vectors import build_index

N, DIM = 1500, 16


def settings(tmp_path: Path, vector_store: str = "faiss", milvus_uri: str = "") -> StoreSettings:
    return StoreSettings(
        vector_store=vector_store,
        index_root=tmp_path / "index",
        faiss=FaissSettings(nprobe=8, ef_search=64, faiss_gpu=False),
        milvus=MilvusSettings(milvus_uri=milvus_uri),
    )


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    vectors = clustered_unit_vectors(N, DIM, centres=20, spread=0.2, seed=3)
    ids = np.random.default_rng(3).choice(2**62, size=N, replace=False).astype(np.int64)
    return ids, vectors


def test_the_factory_opens_the_named_store(tmp_path: Path) -> None:
    assert set(STORES) == {"faiss", "milvus"}
    store = open_store(settings(tmp_path))
    assert isinstance(store, FaissVersions) and store.kind == "faiss"
    with pytest.raises(UnknownStoreError, match="the stores are: faiss, milvus"):
        open_store(StoreSettings.model_construct(vector_store="qdrant"))
    from service.settings import Settings

    with pytest.raises(ValueError, match="unknown vector store 'qdrant'"):
        Settings(vector_store="qdrant")
    with pytest.raises(ValueError, match="unknown vector store 'qdrant'"):
        StoreSettings(vector_store="qdrant")


def test_faiss_versions(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    ids, vectors = data
    store = open_store(settings(tmp_path))
    assert store.current() is None
    assert str(tmp_path / "index") in store.describe_empty()
    assert store.command("full") == "grn reindex"
    store.check_writable()  # a reindex in another process writes beside the served version
    versions = IndexStore(tmp_path / "index")
    built = versions.write_version(build_index("Flat", ids, vectors), model_version="m1",
                                   factory="Flat")  # fmt: skip
    versions.activate(built.version)
    current = store.current()
    assert current is not None and current.version == built.version
    assert current.model_version == "m1" and f"{N} scenes" in current.description
    np.testing.assert_array_equal(store.ids(built.version), np.sort(ids))
    served = store.open(built.version, "m1")
    assert isinstance(served, Searcher) and served.count == N
    assert served.native_filters == {"exclude_ids", "allow_ids"}


def test_faiss_search_takes_every_k_and_any_exclusion(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    ids, vectors = data
    versions = IndexStore(tmp_path)
    versions.activate(
        versions.write_version(build_index("Flat", ids, vectors), model_version="m", factory="Flat")
        .version
    )  # fmt: skip
    served = Searcher(versions.load())
    query = vectors[:1]
    excluded = ids[:1001].tolist()  # the API's most: 1000 ids plus the query's own
    found = served.search(query, 1000, SceneFilter(exclude_ids=excluded))
    assert (found.ids >= 0).sum() == N - 1001 == 499  # all that is left, then padding
    assert not set(found.ids[0].tolist()) & set(excluded)
    full = served.search(query, 1000, SceneFilter(exclude_ids=[int(ids[0])]))
    assert (full.ids >= 0).all() and int(ids[0]) not in full.ids[0]
    unfiltered = served.search(query, 1)  # the query itself
    assert unfiltered.ids[0, 0] == ids[0]
    allowed = served.search(query, 5, SceneFilter(allow_ids=ids[:10], exclude_ids=ids[:8]))
    assert set(allowed.ids[0][:2].tolist()) == set(ids[8:10].tolist())
    assert (allowed.ids[0][2:] == -1).all()
    for k in (0, 1001):
        with pytest.raises(IndexSearchError, match="between 1 and 1000"):
            served.search(query, k)
    with pytest.raises(ValueError, match="labels_all"):
        served.search(query, 5, SceneFilter(labels_all=["water"]))


def test_a_short_allow_list_on_an_inverted_file_is_searched_exactly(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    """An inverted file probing one list of 40 sees few of a scattered allow-list's scenes;
    up to EXACT_ALLOWED allowed scenes are scored exactly, so the answer is brute force's."""
    from index.results import exact_search
    from index.stores.faiss import EXACT_ALLOWED
    from index.vectors import SearchSettings

    ids, vectors = data
    versions = IndexStore(tmp_path)
    built = versions.write_version(
        build_index("IVF40,Flat", ids, vectors), model_version="m", factory="IVF40,Flat"
    )
    versions.activate(built.version)
    served = Searcher(versions.load(), SearchSettings(nprobe=1))
    rng = np.random.default_rng(5)
    rows = rng.choice(N, 300, replace=False)
    allowed = ids[rows]
    assert len(allowed) <= EXACT_ALLOWED
    for query in vectors[rng.choice(N, 5, replace=False)]:
        found = served.search(query[None], 10, SceneFilter(allow_ids=allowed))
        truth = exact_search(vectors[rows], allowed, query[None], 10)
        assert found.ids[0].tolist() == truth.ids[0].tolist()
        np.testing.assert_allclose(found.scores[0], truth.scores[0], rtol=1e-5)
    probed = served.search(vectors[:1], 10)  # unfiltered stays the inverted file's own
    assert (probed.ids >= 0).sum() == 10


def test_milvus_versions(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    pytest.importorskip("pymilvus")
    from index.stores.milvus import MilvusVersions
    from index.stores.milvus_client import switch_alias
    from index.stores.milvus_collection import MilvusCollection

    ids, vectors = data
    uri = str(tmp_path / "milvus.db")
    store = open_store(settings(tmp_path, vector_store="milvus", milvus_uri=uri))
    assert isinstance(store, MilvusVersions)
    try:
        assert store.current() is None
        assert store.describe_empty() == f"Milvus at {uri} has no collection scenes"
        assert store.command("incremental") == f"grn reindex --milvus {uri} --incremental"
        with pytest.raises(StoreBusyError, match="Milvus Lite") as busy:
            store.check_writable()
        assert busy.value.code == "milvus_lite_busy"

        filled = MilvusCollection(uri, "scenes_v1", DIM, "m1", client=store.client())
        metas = [SceneMeta(labels=("water",) if i % 3 == 0 else (), folder=f"f{i % 5}")
                 for i in range(N)]  # fmt: skip
        filled.add(ids, vectors, metas)
        switch_alias(store.client(), "scenes", "scenes_v1")
        current = store.current()
        assert current is not None and current.version == "scenes_v1"
        assert current.model_version == "m1" and f"{N} scenes" in current.description
        np.testing.assert_array_equal(store.ids("scenes_v1"), np.sort(ids))
        served = store.open("scenes_v1", "m1")
        assert served.count == N and "labels_all" in served.native_filters
        found = served.search(vectors[:1], 50, SceneFilter(labels_all=["water"], folder="f0"))
        kept = {int(i) for n, i in enumerate(ids) if n % 3 == 0 and n % 5 == 0}
        assert len(kept) == 100 and (found.ids[0] >= 0).all()
        assert set(found.ids[0].tolist()) <= kept  # the best 50 of the 100 that pass
        np.testing.assert_allclose(served.vectors(ids[:3]), vectors[:3], atol=1e-6)
    finally:
        store.close()
    assert (
        open_store(
            settings(tmp_path, vector_store="milvus", milvus_uri="http://127.0.0.1:9")
        ).check_writable()
        is None
    )  # a server takes writes from other processes
