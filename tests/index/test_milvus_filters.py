"""Milvus filters carry their values apart from the expression (`index.stores.milvus_filters`):
label and folder names with quotes, backslashes, LIKE wildcards, line breaks and non-ASCII
select exactly the scenes `SceneFilter.passes` keeps, on Milvus Lite and on a real Milvus
server, as FAISS does."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from index.filters import SceneFilter, SceneMeta
from index.stores.faiss import FaissCollection
from index.stores.milvus_client import takes_filter_params
from index.stores.milvus_collection import MilvusCollection
from index.stores.milvus_filters import milvus_expression, milvus_literal
from index.synthetic import described_scenes

pytest.importorskip("pymilvus")

NAMES = [
    'wat"er',
    "o'clock",
    "back\\slash",
    'slash\\"quote',
    "100%",
    "a_b",
    "axb",
    "forêt",
    "城市",
    "🌲",
    "line\nbreak",
    "tab\there",
]
"""Label names a hand-escaped expression gets wrong: "forêt" as JSON (`"for\\u00eat"`) is an
error to Milvus Lite, "a_b" would match "axb" in a LIKE."""
FOLDERS = ["forêt/nord", 'dir "q"', "c:\\maps", "城市"]
N, DIM = 80, 8


@pytest.fixture(scope="module")
def scenes() -> tuple[np.ndarray, np.ndarray, list[SceneMeta], np.ndarray]:
    def describe(i: int, rng: np.random.Generator) -> SceneMeta:
        names = rng.choice(NAMES, size=int(rng.integers(1, 4)), replace=False)
        return SceneMeta(labels=tuple(str(n) for n in names), folder=FOLDERS[i % len(FOLDERS)])

    return described_scenes(N, DIM, describe, queries=2, centres=4, spread=0.2, seed=42)


def awkward_filters(ids: np.ndarray) -> list[SceneFilter]:
    filters = [SceneFilter(labels_any=[name]) for name in NAMES]
    filters += [SceneFilter(folder=folder) for folder in FOLDERS]
    return [
        *filters,
        SceneFilter(labels_all=["forêt", "城市"]),
        SceneFilter(labels_none=['wat"er', "back\\slash", "🌲"]),
        SceneFilter(labels_any=["a_b", "100%"], folder="c:\\maps"),
        SceneFilter(labels_any=["o'clock"], exclude_ids=ids[:20].tolist()),
        SceneFilter(labels_none=["line\nbreak"], allow_ids=ids[10:60].tolist()),
    ]


def test_expressions_hold_no_values() -> None:
    where = SceneFilter(labels_any=['wat"er', "城市"], folder="c:\\maps", exclude_ids=[7])
    expression = milvus_expression(where)
    assert expression.expression == (
        "array_contains_any(labels, {labels_any}) and scene == {folder} and id not in {exclude_ids}"
    )
    assert expression.options(templates=True) == {
        "filter": expression.expression,
        "filter_params": {
            "labels_any": ['wat"er', "城市"],
            "folder": "c:\\maps",
            "exclude_ids": [7],
        },
    }
    # written in for a Milvus without templates: Milvus escapes, non-ASCII as itself
    assert expression.options(templates=False) == {
        "filter": 'array_contains_any(labels, ["wat\\"er", "城市"]) and scene == "c:\\\\maps" '
        "and id not in [7]"
    }
    assert milvus_literal("line\nbreak\t") == '"line\\nbreak\\t"'
    assert milvus_expression(SceneFilter()).options(templates=True) == {}


def test_filter_params_encode_as_typed_template_values() -> None:
    """What pymilvus sends a Milvus 2.5+ server: the values typed, none in the expression."""
    from pymilvus.client.prepare import Prepare

    where = SceneFilter(
        labels_all=["forêt", 'a"b'], folder="城市", allow_ids=np.asarray([2**62, 5])
    )
    params = milvus_expression(where).options(templates=True)["filter_params"]
    encoded = Prepare.prepare_expression_template(params)
    assert list(encoded["labels_all"].array_val.string_data.data) == ["forêt", 'a"b']
    assert encoded["folder"].string_val == "城市"
    assert list(encoded["allow_ids"].array_val.long_data.data) == [2**62, 5]


@pytest.mark.parametrize("backend", ["lite", "server"])
def test_awkward_names_filter_exactly(
    tmp_path: Path,
    scenes: tuple[np.ndarray, np.ndarray, list[SceneMeta], np.ndarray],
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    ids, vectors, metas, queries = scenes
    if backend == "lite":
        milvus = MilvusCollection(str(tmp_path / "milvus.db"), "scenes", DIM, "m1")
    else:
        uri = request.getfixturevalue("milvus_server").uri
        milvus = MilvusCollection(uri, f"scenes_{uuid.uuid4().hex[:12]}", DIM, "m1")
    faiss = FaissCollection(model_version="m1", dim=DIM)
    for store in (milvus, faiss):
        store.add(ids, vectors, metas)
        assert store.count() == N  # exact: the server's searches below see every row
    assert not milvus.templates  # neither Milvus Lite 3.2.2 nor the 2.3.5 server take them
    for where in awkward_filters(ids):
        passing = {int(i) for i, meta in zip(ids, metas, strict=True) if where.passes(int(i), meta)}
        assert 0 < len(passing) < N, where  # each filter tells scenes apart
        for store in (milvus, faiss):
            found = store.search(queries, N, where).ids
            for row in found:
                assert set(row[row >= 0].tolist()) == passing, (type(store).__name__, where)
    milvus.close()


@pytest.mark.parametrize(
    ("uri", "version", "templates"),
    [
        ("http://h:19530", "v2.5.4", True),
        ("http://h:19530", "v2.6.0", True),
        ("http://h:19530", "v2.4.17", False),
        ("http://h:19530", "v2.3.5-lite", False),  # PyPI `milvus`, the tests' server
        ("scenes.db", "v2.6.0", False),  # Milvus Lite ignores filter_params at any version
    ],
)
def test_which_milvus_takes_filter_params(uri: str, version: str, templates: bool) -> None:
    from types import SimpleNamespace

    client = SimpleNamespace(get_server_version=lambda: version)
    assert takes_filter_params(client, uri) is templates
