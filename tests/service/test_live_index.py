"""The live index against exact search over what SQL holds: the index version in service less
the removed scenes plus the added ones, on a real FAISS version (Flat and an inverted file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index.filters import SceneFilter
from index.id_mask import IdMask
from index.stores.faiss import FaissVersions
from index.stores.faiss_versions import IndexStore
from index.vectors import build_index
from service.storage.live_index import LiveIndex
from service.storage.scene_reading import WrittenVectors
from service.storage.scene_table import SceneTable

DIM = 16


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def table(ids: np.ndarray, written: WrittenVectors, generation: int = 1) -> SceneTable:
    n = len(ids)
    return SceneTable(
        generation=generation, ids=np.sort(ids),
        names=np.asarray([str(i) for i in np.sort(ids)], dtype=object),
        folders=np.zeros(n, np.int32), folder_names=["f"], splits=np.zeros(n, np.int32),
        split_names=["train"], labels=np.zeros((n, 0), bool), label_names=[],
        label_sets=np.zeros(n, np.int32), label_set_names=[()], written=written,
    )  # fmt: skip


def exact(ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    order = np.argsort(-(vectors @ query), kind="stable")[:k]
    return [int(i) for i in ids[order]]


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_live_index_is_exact_search_over_sql(factory: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base_ids = np.arange(1, 201, dtype=np.int64)
    base_vectors = unit(rng.normal(size=(200, DIM)))
    store = IndexStore(tmp_path)
    manifest = store.write_version(
        build_index(factory, base_ids, base_vectors), model_version="m", factory=factory
    )
    store.activate(manifest.version)
    searcher = FaissVersions(tmp_path).open(manifest.version, "m")
    # (the default nprobe, 64, visits every list of IVF4: exact, for the comparison)

    removed = base_ids[::7]  # 29 scenes gone from SQL
    added_ids = np.arange(1000, 1030, dtype=np.int64)
    added_vectors = unit(rng.normal(size=(30, DIM)))
    probabilities = rng.random((30, 3)).astype(np.float32)
    written = WrittenVectors("m", added_ids, added_vectors, probabilities)
    sql_ids = np.concatenate([base_ids[~np.isin(base_ids, removed)], added_ids])
    live = LiveIndex(searcher, table(sql_ids, written))
    assert live.count == len(sql_ids) and live.changed
    assert np.array_equal(live.held_ids(), np.sort(sql_ids))
    assert live.contains(np.asarray([1000, int(removed[0]), 2])).tolist() == [True, False, True]

    truth_vectors = np.concatenate([base_vectors[~np.isin(base_ids, removed)], added_vectors])
    for _ in range(10):
        query = unit(rng.normal(size=(1, DIM)))
        got = live.search(query, 25)
        assert [int(i) for i in got.ids[0]] == exact(sql_ids, truth_vectors, query[0], 25)
        # an allow-list and an exclusion reach both sides
        allowed = sql_ids[::3]
        where = SceneFilter(allow_ids=allowed, exclude_ids=[int(allowed[0])])
        got = live.search(query, 10, where)
        keep = np.isin(sql_ids, allowed) & (sql_ids != allowed[0])
        assert [int(i) for i in got.ids[0]] == exact(
            sql_ids[keep], truth_vectors[keep], query[0], 10
        )
        # the same as a mask over SQL's ids (what a search hands the store): the removed
        # scenes are in no row of it, the added ones are looked up in it
        universe = np.sort(sql_ids)
        mask = IdMask(universe, np.isin(universe, allowed))
        where = SceneFilter(allow_ids=mask, exclude_ids=[int(allowed[0])])
        assert [int(i) for i in live.search(query, 10, where).ids[0]] == exact(
            sql_ids[keep], truth_vectors[keep], query[0], 10
        )

    # vectors and probabilities of added scenes come from SQL's rows, others from the index
    np.testing.assert_allclose(
        live.vectors([1003, 2]), [added_vectors[3], base_vectors[1]], atol=1e-6
    )
    with pytest.raises(KeyError):
        live.vectors([int(removed[1])])
    assert live.probabilities([1003]) is not None
    assert live.probabilities([1003, 2]) is None  # the version keeps none: not mixed

    # a store updated in place (Milvus) may hold a written scene before the catalog moves
    # on: it comes back once
    held = searcher.ids
    searcher.ids = held[held != 5]  # what the live index saw when it was made
    twice = WrittenVectors("m", np.asarray([5]), base_vectors[[4]], None)
    both = LiveIndex(searcher, table(base_ids, twice, generation=2))
    searcher.ids = held
    got = [int(i) for i in both.search(base_vectors[4:5], 5).ids[0]]
    assert got[0] == 5 and got.count(5) == 1 and len(set(got)) == 5 - got.count(-1)
