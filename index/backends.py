"""One small interface for the vector store, with FAISS (embedded, the default) and Milvus
(Milvus Lite embedded in a file for tests and small setups; the same client calls against a
Milvus server or cluster) behind it.

A store holds unit vectors by scene id, with the scene metadata that filters need (labels,
scene folder), and the model version its vectors come from. Filters: labels that must all be
present, labels of which one must be present, a scene folder, ids to exclude, and an
allow-list of ids (what the service computes in SQL). FAISS answers them with an id selector
over the ids that pass; Milvus turns them into its filter expressions.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from index.vectors import MAX_K, IndexSearchError, SearchResult, make_index, search


@dataclass(frozen=True)
class SceneMeta:
    labels: tuple[str, ...] = ()
    scene: str = ""


@dataclass(frozen=True)
class VectorFilter:
    labels_all: Sequence[str] = ()
    labels_any: Sequence[str] = ()
    scene: str | None = None
    exclude_ids: Sequence[int] = ()
    allow_ids: Sequence[int] | None = None

    def passes(self, scene_id: int, meta: SceneMeta) -> bool:
        """The reference semantics every backend must follow."""
        labels = set(meta.labels)
        return (
            set(self.labels_all) <= labels
            and (not self.labels_any or bool(labels & set(self.labels_any)))
            and (self.scene is None or meta.scene == self.scene)
            and scene_id not in set(self.exclude_ids)
            and (self.allow_ids is None or scene_id in set(self.allow_ids))
        )


class VectorStore(Protocol):
    model_version: str

    def add(self, ids: np.ndarray, vectors: np.ndarray, metas: Sequence[SceneMeta]) -> None: ...

    def remove(self, ids: np.ndarray) -> int: ...

    def search(
        self, queries: np.ndarray, k: int, where: VectorFilter | None = None
    ) -> SearchResult: ...

    def count(self) -> int: ...

    def ids(self) -> np.ndarray: ...


def _check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise IndexSearchError(f"k must be between 1 and {MAX_K}, got {k}")


@dataclass
class FaissStore:
    """A FAISS index (any factory string) plus the metadata filters need, in memory.

    `copy` (`index.gpu.to_gpus` where faiss-gpu has GPUs) makes a copy of the index that
    answers unfiltered searches; as GPU and sharded indexes ignore id selectors, filtered
    searches stay on the CPU index. The copy is remade after the index changes."""

    model_version: str
    dim: int
    factory: str = "Flat"
    metas: dict[int, SceneMeta] = field(default_factory=dict)
    copy: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        self.index = make_index(self.factory, self.dim)
        if not self.index.is_trained:
            raise ValueError("FaissStore builds untrained factories only (Flat, HNSW...)")
        self._copy: Any = None

    def add(self, ids: np.ndarray, vectors: np.ndarray, metas: Sequence[SceneMeta]) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        self.metas.update(zip(ids.tolist(), metas, strict=True))
        self._copy = None

    def remove(self, ids: np.ndarray) -> int:
        import faiss

        ids = np.asarray(ids, dtype=np.int64)
        removed = int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))
        self._copy = None
        for scene_id in ids.tolist():
            self.metas.pop(scene_id, None)
        return removed

    def search(
        self, queries: np.ndarray, k: int, where: VectorFilter | None = None
    ) -> SearchResult:
        _check_k(k)
        if where is None and self.copy is not None:
            if self._copy is None:
                self._copy = self.copy(self.index)
            return search(self._copy, queries, k)
        allowed = None
        if where is not None:
            allowed = np.asarray(
                [i for i, meta in self.metas.items() if where.passes(i, meta)], dtype=np.int64
            )
        return search(self.index, queries, k, allow_ids=allowed)

    def count(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        return np.sort(np.fromiter(self.metas, dtype=np.int64, count=len(self.metas)))


MODEL_PROPERTY = "grn.model_version"


def resolve_collection(client: Any, name: str) -> str | None:
    """The collection `name` stands for: the one an alias of that name points at, else a
    collection of that name; None when neither exists."""
    if name in client.list_aliases().get("aliases", []):
        target: str = client.describe_alias(name)["collection_name"]
        return target
    return name if client.has_collection(name) else None


def collection_ids(client: Any, collection: str) -> np.ndarray:
    """Every scene id in a collection, sorted (loading it first: Milvus answers queries on
    loaded collections only)."""
    client.load_collection(collection)
    found: list[int] = []
    iterator = client.query_iterator(collection, batch_size=1000, output_fields=["id"])
    while batch := iterator.next():
        found += [int(row["id"]) for row in batch]
    iterator.close()
    return np.sort(np.asarray(found, dtype=np.int64))


VERSION_PATTERN = re.compile(r"(.+)_v(\d+)")
"""`<alias>_v<time in ns>`: the collections `grn reindex --milvus` builds for an alias."""


def version_name(alias: str) -> str:
    return f"{alias}_v{time.time_ns()}"


def version_time(name: str, alias: str | None = None) -> int | None:
    """The build time (ns) in a version's name; None for another name (or another alias)."""
    match = VERSION_PATTERN.fullmatch(name)
    if match is None or (alias is not None and match.group(1) != alias):
        return None
    return int(match.group(2))


def collection_model(client: Any, collection: str) -> str | None:
    """The model version a Milvus collection's vectors come from (None if unrecorded)."""
    properties = client.describe_collection(collection).get("properties") or {}
    model: str | None = properties.get(MODEL_PROPERTY)
    return model


def milvus_expression(where: VectorFilter) -> str:
    """A filter as a Milvus boolean expression (strings quoted as JSON: escapes included)."""
    parts = []
    if where.labels_all:
        parts.append(f"array_contains_all(labels, {json.dumps(list(where.labels_all))})")
    if where.labels_any:
        parts.append(f"array_contains_any(labels, {json.dumps(list(where.labels_any))})")
    if where.scene is not None:
        parts.append(f"scene == {json.dumps(where.scene)}")
    if where.exclude_ids:
        parts.append(f"id not in {[int(i) for i in where.exclude_ids]}")
    if where.allow_ids is not None:
        parts.append(f"id in {[int(i) for i in where.allow_ids]}")
    return " and ".join(parts)


class MilvusStore:
    """A Milvus collection: `uri` is a file path for Milvus Lite, or a server's address
    (`http://host:19530`) for Milvus itself. A collection property records the model version
    of its vectors; a collection of another model is refused (`replace` drops it first).
    `collection` may be an alias: the store then works on the collection it points at."""

    def __init__(
        self,
        uri: str,
        collection: str,
        dim: int,
        model_version: str,
        token: str = "",
        replace: bool = False,
        client: Any = None,
    ) -> None:
        from pymilvus import DataType, MilvusClient

        self.client = client if client is not None else MilvusClient(uri=uri, token=token)
        self.dim = dim
        existing = resolve_collection(self.client, collection)
        if replace and existing is not None:
            if existing != collection:
                self.client.drop_alias(collection)
            self.client.drop_collection(existing)
            existing = None
        collection = existing or collection
        self.collection = collection
        if existing is not None:
            stored = collection_model(self.client, collection)
            if stored != model_version:
                raise ValueError(
                    f"Milvus collection {collection} holds vectors of model {stored}, not "
                    f"{model_version}; rebuild it (`grn reindex --milvus URI --replace`) or "
                    "use another collection"
                )
        else:
            schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            schema.add_field("scene", DataType.VARCHAR, max_length=200)
            schema.add_field(
                "labels",
                DataType.ARRAY,
                element_type=DataType.VARCHAR,
                max_capacity=256,
                max_length=200,
            )
            index = self.client.prepare_index_params()
            index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
            self.client.create_collection(
                collection,
                schema=schema,
                index_params=index,
                properties={MODEL_PROPERTY: model_version},
            )
        self.client.load_collection(collection)
        self.model_version = model_version

    def add(self, ids: np.ndarray, vectors: np.ndarray, metas: Sequence[SceneMeta]) -> None:
        rows = [
            {
                "id": int(i),
                "vector": np.asarray(v, dtype=np.float32).tolist(),
                "scene": meta.scene,
                "labels": list(meta.labels),
            }
            for i, v, meta in zip(ids, vectors, metas, strict=True)
        ]
        for start in range(0, len(rows), 1000):
            self.client.insert(self.collection, rows[start : start + 1000])

    def remove(self, ids: np.ndarray) -> int:
        present = self._present(np.asarray(ids, dtype=np.int64))
        if present:
            self.client.delete(self.collection, ids=present)
        return len(present)

    def _present(self, ids: np.ndarray) -> list[int]:
        found: list[int] = []
        for start in range(0, len(ids), 1000):
            chunk = [int(i) for i in ids[start : start + 1000]]
            rows = self.client.query(self.collection, filter=f"id in {chunk}", output_fields=["id"])
            found += [int(row["id"]) for row in rows]
        return found

    def search(
        self, queries: np.ndarray, k: int, where: VectorFilter | None = None
    ) -> SearchResult:
        _check_k(k)
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        options: dict[str, Any] = {"search_params": {"metric_type": "IP"}}
        if where is not None and (expression := milvus_expression(where)):
            options["filter"] = expression
        answers = self.client.search(
            self.collection, data=queries.tolist(), limit=k, output_fields=[], **options
        )
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for row, hits in enumerate(answers):
            for column, hit in enumerate(hits[:k]):
                ids[row, column] = int(hit["id"])
                scores[row, column] = float(hit["distance"])
        return SearchResult(ids, scores)

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored vectors of scenes, in the order given."""
        from index.searcher import UnknownSceneError

        wanted = [int(i) for i in ids]
        found: dict[int, list[float]] = {}
        for start in range(0, len(wanted), 1000):
            chunk = wanted[start : start + 1000]
            rows = self.client.query(
                self.collection, filter=f"id in {chunk}", output_fields=["vector"]
            )
            found.update((int(row["id"]), row["vector"]) for row in rows)
        missing = [i for i in wanted if i not in found]
        if missing:
            raise UnknownSceneError(
                f"scene {missing[0]} is not in Milvus collection {self.collection}"
            )
        return np.asarray([found[i] for i in wanted], dtype=np.float32).reshape(-1, self.dim)

    def close(self) -> None:
        self.client.close()

    def count(self) -> int:
        return int(
            self.client.query(self.collection, filter="", output_fields=["count(*)"])[0]["count(*)"]
        )

    def ids(self) -> np.ndarray:
        return collection_ids(self.client, self.collection)


class VectorStoreUnavailableError(RuntimeError):
    """The vector store did not answer (a Milvus server down or unreachable)."""


class MilvusSearcher:
    """A Milvus collection as the service searches it, with the interface of
    `index.searcher.Searcher`. It is bound to one collection version (not the alias), so a
    request keeps searching the version it started with while a rebuild switches the alias.
    Filters go to Milvus as expressions (`filters_natively`), not as SQL allow-lists."""

    filters_natively = True

    def __init__(self, store: MilvusStore, location: str) -> None:
        self.store = store
        self.location = location
        """Where it lives (the URI), for the record in SQL."""

    @property
    def version(self) -> str:
        return self.store.collection

    @property
    def model_version(self) -> str:
        return self.store.model_version

    @property
    def factory(self) -> str:
        return "Milvus FLAT"

    @property
    def created(self) -> str:
        stamp = version_time(self.version)
        if stamp is None:
            return ""
        return datetime.fromtimestamp(stamp / 1e9, UTC).isoformat(timespec="seconds")

    @property
    def count(self) -> int:
        with milvus_answering(self.location):
            return self.store.count()

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        with milvus_answering(self.location):
            return self.store.vectors(ids)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allow_ids: np.ndarray | None = None,
        where: VectorFilter | None = None,
    ) -> SearchResult:
        if allow_ids is not None:
            where = replace(where or VectorFilter(), allow_ids=[int(i) for i in allow_ids])
        with milvus_answering(self.location):
            return self.store.search(queries, k, where)


@contextmanager
def milvus_answering(location: str) -> Iterator[None]:
    """Milvus's own errors as `VectorStoreUnavailableError` (a 503 in the service)."""
    from pymilvus.exceptions import MilvusException

    try:
        yield
    except MilvusException as exc:
        raise VectorStoreUnavailableError(
            f"the Milvus vector store at {location} did not answer: {exc}"
        ) from exc
