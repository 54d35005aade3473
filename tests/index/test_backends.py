"""The vector-store interface: FAISS, Milvus Lite (embedded) and a real Milvus standalone
server answer the same searches, filtered and not, with what brute force over the passing
scenes gives."""

from __future__ import annotations

import uuid
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from index.filters import SceneFilter, SceneMeta
from index.gpu import cpu_shards, gpu_count, to_gpus
from index.stores.faiss import FaissCollection
from index.stores.milvus_collection import MilvusCollection
from index.stores.milvus_filters import milvus_expression
from index.synthetic import described_scenes
from index.vectors import exact_search

LABELS = ["water", "trees", "buildings", "cars", "grass"]
N, DIM = 600, 16


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, list[SceneMeta], np.ndarray]:
    def describe(i: int, rng: np.random.Generator) -> SceneMeta:
        labels = tuple(name for name in LABELS if rng.random() < 0.35)
        return SceneMeta(labels=labels, folder=f"folder{i % 7}")

    return described_scenes(N, DIM, describe, queries=8, centres=12, spread=0.1, seed=5)


def stores(tmp_path: Path, data, server_uri: str) -> list:  # type: ignore[no-untyped-def]
    ids, vectors, metas, _ = data
    backends = [
        FaissCollection(model_version="m1", dim=DIM),
        # unfiltered searches on a sharded copy, which ignores id selectors as GPU indexes do
        FaissCollection(model_version="m1", dim=DIM, copy=partial(cpu_shards, shards=3)),
        MilvusCollection(str(tmp_path / "milvus.db"), "scenes", DIM, "m1"),
        MilvusCollection(server_uri, f"scenes_{uuid.uuid4().hex[:12]}", DIM, "m1"),
    ]
    if gpu_count() > 0:
        backends.append(FaissCollection(model_version="m1", dim=DIM, copy=to_gpus))
    for store in backends:
        store.add(ids, vectors, metas)
        # an exact count: the server has taken in every acknowledged insert, so the
        # searches below (at its default consistency) see them all
        assert store.count() == N
    return backends


FILTERS = [
    None,
    SceneFilter(labels_all=["water", "trees"]),
    SceneFilter(labels_any=["cars", "grass"]),
    SceneFilter(folder="folder3", labels_any=["buildings"]),
    SceneFilter(labels_all=['wat"er']),  # a quote in a name must not break the expression
    SceneFilter(labels_none=["water", "cars"]),
    SceneFilter(labels_any=["trees"], labels_none=["grass"], folder="folder2"),
]


def test_filtered_search_is_correct_on_every_backend(tmp_path: Path, data, milvus_server) -> None:  # type: ignore[no-untyped-def]
    ids, vectors, metas, queries = data
    backends = stores(tmp_path, data, milvus_server.uri)
    excluded = SceneFilter(labels_any=["trees"], exclude_ids=ids[:50].tolist())
    allowed = SceneFilter(allow_ids=ids[100:400].tolist(), labels_all=["grass"])
    for where in [*FILTERS, excluded, allowed]:
        passing = np.asarray(
            [where is None or where.passes(int(i), m) for i, m in zip(ids, metas, strict=True)]
        )
        truth = exact_search(vectors[passing], ids[passing], queries, 10) if passing.any() else None
        for store in backends:
            found = store.search(queries, 10, where)
            if truth is None:
                assert (found.ids == -1).all(), (type(store).__name__, where)
                continue
            width = truth.ids.shape[1]
            np.testing.assert_array_equal(
                found.ids[:, :width], truth.ids, err_msg=f"{store} {where}"
            )
            np.testing.assert_allclose(found.scores[:, :width], truth.scores, atol=1e-5)
            assert (found.ids[:, width:] == -1).all()


def test_add_remove_count_and_ids(tmp_path: Path, data, milvus_server) -> None:  # type: ignore[no-untyped-def]
    ids, _, _, queries = data
    for store in stores(tmp_path, data, milvus_server.uri):
        assert store.count() == N
        np.testing.assert_array_equal(store.ids(), np.sort(ids))
        assert store.remove(np.concatenate([ids[:10], [12345]])) == 10
        assert store.count() == N - 10
        assert not set(store.search(queries, 50).ids.ravel().tolist()) & set(ids[:10].tolist())


def test_a_milvus_collection_of_another_model_is_refused(tmp_path: Path, milvus_server) -> None:  # type: ignore[no-untyped-def]
    name = f"scenes_{uuid.uuid4().hex[:12]}"
    for uri in (str(tmp_path / "m.db"), milvus_server.uri):
        MilvusCollection(uri, name, DIM, "model-a")
        with pytest.raises(ValueError, match="model-a"):
            MilvusCollection(uri, name, DIM, "model-b")


def test_milvus_expressions() -> None:
    where = SceneFilter(labels_all=["a"], labels_any=["b", "c"], folder='x"y', exclude_ids=[3])
    expression = milvus_expression(where)
    assert expression.expression == (
        "array_contains_all(labels, {labels_all}) and array_contains_any(labels, {labels_any})"
        " and scene == {folder} and id not in {exclude_ids}"
    )
    assert expression.params == {
        "labels_all": ["a"],
        "labels_any": ["b", "c"],
        "folder": 'x"y',
        "exclude_ids": [3],
    }
    assert expression.inline() == (
        'array_contains_all(labels, ["a"]) and array_contains_any(labels, ["b", "c"]) and '
        'scene == "x\\"y" and id not in [3]'
    )
