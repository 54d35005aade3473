"""One Milvus collection of scene vectors: its schema, and adding, removing, searching and
reading back scenes.

Each row keeps its labels and scene folder, so label and folder filters run in Milvus
(`index.stores.milvus_filters`), and the classifier's label probabilities.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from index.filters import SceneFilter, SceneMeta
from index.results import SearchResult, check_k
from index.stores.base import UnknownSceneError
from index.stores.milvus_client import (
    EXACT,
    MODEL_PROPERTY,
    collection_count,
    collection_ids,
    collection_model,
    connect,
    has_field,
    resolve_collection,
    takes_filter_params,
    vector_dim,
)
from index.stores.milvus_filters import ids_filter, milvus_expression

QUERY_IDS = 1000
"""Scene ids per query or insert."""


class MilvusCollection:
    """One Milvus collection: add, remove, search with filters, vectors by id. `collection`
    may be an alias: it then works on the collection the alias points at. A collection of
    another model is refused (`replace` drops it first). `dim` may be None for a collection
    that exists (it is read from its schema)."""

    def __init__(
        self,
        uri: str,
        collection: str,
        dim: int | None,
        model_version: str,
        token: str = "",
        replace: bool = False,
        client: Any = None,
    ) -> None:
        from pymilvus import DataType

        self.client = client if client is not None else connect(uri, token)
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
            if dim is None:
                dim = vector_dim(self.client, collection)
        else:
            if dim is None:
                raise ValueError(f"Milvus has no collection {collection} to open")
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
            # the classifier's label probabilities (empty: not known), for label queries
            schema.add_field(
                "probabilities", DataType.ARRAY, element_type=DataType.FLOAT, max_capacity=4096
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
        self.dim = dim
        self.keeps_probabilities = has_field(self.client, collection, "probabilities")
        """False for a collection made before they were kept."""
        self.templates = takes_filter_params(self.client, uri)
        """Whether filter values go as `filter_params` (else written into the expression)."""

    def add(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        metas: Sequence[SceneMeta],
        probabilities: np.ndarray | None = None,
    ) -> None:
        """Insert scenes: vectors, filter metadata and (when known) label probabilities."""
        rows: list[dict[str, Any]] = [
            {
                "id": int(i),
                "vector": np.asarray(v, dtype=np.float32).tolist(),
                "scene": meta.folder,
                "labels": list(meta.labels),
            }
            for i, v, meta in zip(ids, vectors, metas, strict=True)
        ]
        if self.keeps_probabilities:
            for number, row in enumerate(rows):
                row["probabilities"] = (
                    [] if probabilities is None else probabilities[number].tolist()
                )
        for start in range(0, len(rows), QUERY_IDS):
            self.client.insert(self.collection, rows[start : start + QUERY_IDS])

    def remove(self, ids: np.ndarray) -> int:
        present = self.present(np.asarray(ids, dtype=np.int64))
        if present:
            self.client.delete(self.collection, ids=present)
        return len(present)

    def present(self, ids: np.ndarray, exact: bool = True) -> list[int]:
        """Those of `ids` the collection holds; `exact` (the default) after every write
        acknowledged before."""
        rows = self._query([int(i) for i in ids], "id", EXACT if exact else None)
        return [int(row["id"]) for row in rows]

    def search(self, queries: np.ndarray, k: int, where: SceneFilter | None = None) -> SearchResult:
        check_k(k)
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        options: dict[str, Any] = {"search_params": {"metric_type": "IP"}}
        if where is not None:
            options.update(milvus_expression(where).options(self.templates))
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

    def _query(
        self, ids: list[int], column: str, consistency: dict[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """The rows of these scene ids the collection holds, with their id and `column`,
        asked for `QUERY_IDS` ids at a time."""
        for start in range(0, len(ids), QUERY_IDS):
            chunk = ids_filter(ids[start : start + QUERY_IDS]).options(self.templates)
            yield from self.client.query(
                self.collection, output_fields=[column], **chunk, **(consistency or {})
            )

    def _rows(self, ids: Sequence[int] | np.ndarray, column: str) -> list[list[float]]:
        """One field of scenes, in the order given."""
        wanted = [int(i) for i in ids]
        found = {int(row["id"]): list(row[column]) for row in self._query(wanted, column)}
        missing = [i for i in wanted if i not in found]
        if missing:
            raise UnknownSceneError(
                f"scene {missing[0]} is not in Milvus collection {self.collection}"
            )
        return [found[i] for i in wanted]

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored vectors of scenes, in the order given."""
        return np.asarray(self._rows(ids, "vector"), dtype=np.float32).reshape(-1, self.dim)

    def probabilities(self, ids: Sequence[int] | np.ndarray) -> np.ndarray | None:
        """The kept label probabilities of scenes, in the order given; None when any of
        them is not known."""
        if not self.keeps_probabilities:
            return None
        rows = self._rows(ids, "probabilities")
        if not rows or any(not row for row in rows) or len({len(row) for row in rows}) > 1:
            return None
        return np.asarray(rows, dtype=np.float32)

    def close(self) -> None:
        self.client.close()

    def count(self, exact: bool = True) -> int:
        """The scenes held: `exact` (the default) counts every write acknowledged before."""
        return collection_count(self.client, self.collection, exact)

    def ids(self) -> np.ndarray:
        return collection_ids(self.client, self.collection)
