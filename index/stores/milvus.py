"""Milvus as the vector store: collections behind an alias, on a Milvus server or in a Milvus
Lite file (embedded, for tests and small setups: it searches in Python).

The name searched (`scenes` by default) is a Milvus alias. A full build fills a new
collection `<alias>_v<time>` and then switches the alias to it in one call, as the FAISS
store switches its `current` pointer: a service searching the alias never sees a half-built
collection, and a build killed midway leaves the previous one in service (the orphan is
dropped by the next build). An incremental build updates the collection in service in place.
The embedding shards are the FAISS job's (resumable, per model version), so a killed job
resumes.

Each row keeps its labels and scene folder, so label and folder filters run in Milvus as
boolean expressions; a collection property records the model version of its vectors, and a
collection of another model is refused. Every client is made by `connect`, with the
settings' token.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from index.filters import SceneFilter, SceneMeta
from index.results import SearchResult, check_k
from index.stores.base import (
    IndexNotReadyError,
    ReindexAction,
    ReindexOptions,
    StoreBusyError,
    StoreVersion,
    UnknownSceneError,
    VectorStoreUnavailableError,
)

if TYPE_CHECKING:
    from model.archive import Archive

MODEL_PROPERTY = "grn.model_version"
NATIVE_FILTERS = frozenset(
    {"labels_all", "labels_any", "labels_none", "folder", "exclude_ids", "allow_ids"}
)
VERSION_PATTERN = re.compile(r"(.+)_v(\d+)")
"""`<alias>_v<time in ns>`: the collections a full build makes for an alias."""


def connect(uri: str, token: str = "") -> Any:
    """A Milvus client: `uri` is a server (`http://host:19530`) or a Milvus Lite file."""
    from pymilvus import MilvusClient

    with milvus_answering(uri):
        return MilvusClient(uri=uri, token=token)


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


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "tcp://"))


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


def collection_count(client: Any, collection: str) -> int:
    client.load_collection(collection)
    rows = client.query(collection, filter="", output_fields=["count(*)"])
    return int(rows[0]["count(*)"])


def vector_dim(client: Any, collection: str) -> int:
    """The dimension of a collection's vector field."""
    for column in client.describe_collection(collection).get("fields", []):
        if column.get("name") == "vector":
            return int(column["params"]["dim"])
    raise ValueError(f"Milvus collection {collection} has no vector field")


def has_field(client: Any, collection: str, name: str) -> bool:
    return any(c.get("name") == name for c in client.describe_collection(collection)["fields"])


def collection_model(client: Any, collection: str) -> str | None:
    """The model version a Milvus collection's vectors come from (None if unrecorded)."""
    properties = client.describe_collection(collection).get("properties") or {}
    model: str | None = properties.get(MODEL_PROPERTY)
    return model


def version_name(alias: str) -> str:
    return f"{alias}_v{time.time_ns()}"


def version_time(name: str, alias: str | None = None) -> int | None:
    """The build time (ns) in a version's name; None for another name (or another alias)."""
    match = VERSION_PATTERN.fullmatch(name)
    if match is None or (alias is not None and match.group(1) != alias):
        return None
    return int(match.group(2))


def milvus_expression(where: SceneFilter) -> str:
    """A filter as a Milvus boolean expression (strings quoted as JSON: escapes included)."""
    unsupported = where.conditions() - NATIVE_FILTERS
    if unsupported:
        raise ValueError(f"Milvus rows carry no {', '.join(sorted(unsupported))} to filter by")
    parts = []
    if where.labels_all:
        parts.append(f"array_contains_all(labels, {json.dumps(list(where.labels_all))})")
    if where.labels_any:
        parts.append(f"array_contains_any(labels, {json.dumps(list(where.labels_any))})")
    if where.labels_none:
        parts.append(f"not array_contains_any(labels, {json.dumps(list(where.labels_none))})")
    if where.folder is not None:
        parts.append(f"scene == {json.dumps(where.folder)}")
    if where.exclude_ids:
        parts.append(f"id not in {[int(i) for i in where.exclude_ids]}")
    if where.allow_ids is not None:
        parts.append(f"id in {[int(i) for i in where.allow_ids]}")
    return " and ".join(parts)


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
        for start in range(0, len(rows), 1000):
            self.client.insert(self.collection, rows[start : start + 1000])

    def remove(self, ids: np.ndarray) -> int:
        present = self.present(np.asarray(ids, dtype=np.int64))
        if present:
            self.client.delete(self.collection, ids=present)
        return len(present)

    def present(self, ids: np.ndarray) -> list[int]:
        found: list[int] = []
        for start in range(0, len(ids), 1000):
            chunk = [int(i) for i in ids[start : start + 1000]]
            rows = self.client.query(self.collection, filter=f"id in {chunk}", output_fields=["id"])
            found += [int(row["id"]) for row in rows]
        return found

    def search(self, queries: np.ndarray, k: int, where: SceneFilter | None = None) -> SearchResult:
        check_k(k)
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

    def _rows(self, ids: Sequence[int] | np.ndarray, column: str) -> list[list[float]]:
        """One field of scenes, in the order given."""
        wanted = [int(i) for i in ids]
        found: dict[int, list[float]] = {}
        for start in range(0, len(wanted), 1000):
            chunk = wanted[start : start + 1000]
            rows = self.client.query(
                self.collection, filter=f"id in {chunk}", output_fields=[column]
            )
            found.update((int(row["id"]), list(row[column])) for row in rows)
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

    def count(self) -> int:
        return collection_count(self.client, self.collection)

    def ids(self) -> np.ndarray:
        return collection_ids(self.client, self.collection)


class MilvusSearcher:
    """A Milvus collection version as the service searches it. It is bound to one
    collection (not the alias), so a request keeps searching the version it started with
    while a rebuild switches the alias. Label and folder filters run in Milvus."""

    native_filters = NATIVE_FILTERS

    def __init__(self, collection: MilvusCollection, location: str) -> None:
        self.collection = collection
        self.location = location

    @property
    def version(self) -> str:
        return self.collection.collection

    @property
    def model_version(self) -> str:
        return self.collection.model_version

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
            return self.collection.count()

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        with milvus_answering(self.location):
            return self.collection.vectors(ids)

    def held_ids(self) -> np.ndarray:
        with milvus_answering(self.location):
            return self.collection.ids()

    def probabilities(self, ids: Sequence[int] | np.ndarray) -> np.ndarray | None:
        with milvus_answering(self.location):
            return self.collection.probabilities(ids)

    def descriptors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray | None:
        return None  # a collection keeps no descriptors: its searches are not re-ranked

    def seen(self, ids: Sequence[int] | np.ndarray) -> np.ndarray | None:
        return None

    def contains(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        with milvus_answering(self.location):
            present = self.collection.present(ids)
        return np.isin(ids, np.asarray(present, dtype=np.int64))

    def search(self, queries: np.ndarray, k: int, where: SceneFilter | None = None) -> SearchResult:
        with milvus_answering(self.location):
            return self.collection.search(queries, k, where)


@dataclass
class MilvusReport:
    collection: str
    """The name searched: an alias of the version below."""
    version: str
    """The collection now behind the alias."""
    count: int
    added: int
    removed: int
    seconds: float
    broken: list[Any] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"collection {self.collection}"

    def summary(self) -> str:
        return (
            f"Milvus collection {self.collection} ({self.version}): {self.count} scenes; "
            f"added {self.added}, removed {self.removed}; {self.seconds:.1f} s"
        )


def versions_of(client: Any, collection: str) -> list[str]:
    """The collections built for an alias, oldest first (their names carry the time)."""
    stamps = {name: version_time(name, collection) for name in client.list_collections()}
    return sorted((n for n, t in stamps.items() if t is not None), key=lambda n: stamps[n] or 0)


def switch_alias(client: Any, collection: str, target: str) -> None:
    """Point the alias `collection` at `target` in one step. A plain collection of that name
    (a layout before aliases) is dropped first: that is the one moment without it."""
    if collection in client.list_aliases().get("aliases", []):
        client.alter_alias(target, collection)
        return
    if client.has_collection(collection):
        client.drop_collection(collection)
    client.create_alias(target, collection)


def prune_versions(client: Any, collection: str, keep: Sequence[str | None]) -> list[str]:
    """Drop the alias's versions other than `keep`: after a switch, the one in service and
    the one before it (a service that has not polled yet may still be searching it). What
    goes are older versions and unfinished builds (a build killed before its switch)."""
    dropped = [name for name in versions_of(client, collection) if name not in keep]
    for name in dropped:
        client.drop_collection(name)
    return dropped


def reindex_milvus(
    model_path: str | Path,
    archive_dir: str | Path | Archive,
    uri: str,
    collection: str,
    work: str | Path,
    *,
    labels_csv: str | Path | None = None,
    incremental: bool = False,
    replace: bool = False,
    device: str = "auto",
    skip_broken: bool = False,
    progress: bool = True,
    names: Sequence[str] | None = None,
    token: str = "",
    ray_workers: int | None = None,
) -> MilvusReport:
    """Fill the alias `collection` with the archive's scenes.

    Full (default): a new collection version is built beside the one in service and the
    alias is switched to it when it is complete, so searches never see a half-built
    collection and a killed build leaves the previous one in service. The alias must be new
    or empty unless `replace` (a rebuild, also what a new model needs). Incremental: add the
    scenes the collection in service lacks and remove those that left the archive, in place.
    A collection of another model is refused. `names` limits the scenes to those image stems
    (the rest count as gone)."""
    from index.embedding_job import run_embedding_job
    from model.archive import as_archive, scene_id
    from model.card import load_model
    from model.faults import kill_point
    from model.inference import configure_cpu_threads, resolve_device

    configure_cpu_threads()
    start = time.perf_counter()
    torch_device = resolve_device(device)
    net, card = load_model(model_path, torch_device)
    archive = as_archive(archive_dir, labels_csv)
    client = connect(uri, token)
    try:
        live = resolve_collection(client, collection)
        in_place = incremental and live is not None
        if live is not None and not replace:
            current = MilvusCollection(
                uri, collection, card.vector_dim, card.version, client=client
            )
            held = current.count()
            if held and not incremental:
                raise ValueError(
                    f"Milvus collection {collection} already holds {held} scenes: use "
                    "--incremental to update it or --replace to rebuild it"
                )
        target = live if in_place and live is not None else version_name(collection)
        store = MilvusCollection(uri, target, card.vector_dim, card.version, client=client)
        chosen = archive.indices() if names is None else [archive.index_of(n) for n in names]
        ids = np.asarray([scene_id(archive.scenes[i].name) for i in chosen], dtype=np.int64)
        present = store.ids()
        new = ~np.isin(ids, present)
        gone = present[~np.isin(present, ids)]
        positions = [chosen[int(p)] for p in np.flatnonzero(new)]
        embedded = run_embedding_job(
            net, card, archive, positions, ids[new].tolist(), Path(work), device=torch_device,
            skip_broken=skip_broken, progress=progress, ray_workers=ray_workers,
            model_path=model_path,
        )  # fmt: skip
        row_of = {scene_id(archive.scenes[p].name): p for p in positions}
        metas = [archive_meta(archive, row_of[int(i)]) for i in embedded.ids]
        if len(embedded.ids):
            store.add(embedded.ids, embedded.embeddings, metas, embedded.probabilities)
        removed = store.remove(gone) if len(gone) else 0
        count = store.count()
        if not in_place:
            client.flush(target)
            kill_point("milvus-filled")
            switch_alias(client, collection, target)
            prune_versions(client, collection, keep=[target, live])
        shutil.rmtree(Path(work) / card.version, ignore_errors=True)
    finally:
        client.close()
    return MilvusReport(
        collection, target, count, len(embedded.ids), removed, time.perf_counter() - start,
        embedded.broken,
    )  # fmt: skip


def archive_meta(archive: Any, position: int) -> SceneMeta:
    """The labels and folder a row keeps for filtering, from the archive."""
    scene = archive.scenes[position]
    if not scene.labelled:  # no labels to filter by, as in SQL
        return SceneMeta(labels=(), folder=scene.folder)
    labels = zip(archive.label_names, scene.labels, strict=True)
    return SceneMeta(labels=tuple(name for name, flag in labels if flag), folder=scene.folder)


@dataclass
class MilvusVersions:
    """The Milvus store: the collection an alias points at, on a server or a Lite file."""

    uri: str
    alias: str = "scenes"
    token: str = ""
    work: Path = Path("data/index/work")
    """Where the embedding shards of a reindex go (resumable)."""
    kind: str = "milvus"

    def __post_init__(self) -> None:
        self._client: Any = None

    @property
    def location(self) -> str:
        return f"Milvus {self.uri} collection {self.alias}"

    def client(self) -> Any:
        """The store's client, made on first use."""
        if self._client is None:
            if not self.uri:
                raise IndexNotReadyError("GRN_VECTOR_STORE is milvus but GRN_MILVUS_URI is empty")
            self._client = connect(self.uri, self.token)
        return self._client

    def current(self) -> StoreVersion | None:
        with milvus_answering(self.uri):
            client = self.client()
            live = resolve_collection(client, self.alias)
            if live is None:
                return None
            model = collection_model(client, live)
            count = collection_count(client, live)
        return StoreVersion(
            live,
            model,
            f"{self.alias} -> {live} (Milvus at {self.uri}, {count} scenes, model {model})",
        )

    def describe_empty(self) -> str:
        return f"Milvus at {self.uri} has no collection {self.alias}"

    def ids(self, version: str) -> np.ndarray:
        with milvus_answering(self.uri):
            return collection_ids(self.client(), version)

    def open(self, version: str, model_version: str) -> MilvusSearcher:
        with milvus_answering(self.uri):
            collection = MilvusCollection(
                self.uri, version, None, model_version, client=self.client()
            )
        return MilvusSearcher(collection, self.uri)

    def reindex(
        self, model_path: str | Path, archive_dir: str | Path | Archive, options: ReindexOptions
    ) -> MilvusReport:
        """See `reindex_milvus`; `options.build` (FAISS's index settings) does not apply."""
        self.close()  # Milvus Lite lets one client at a time open its file
        return reindex_milvus(
            model_path, archive_dir, self.uri, self.alias, self.work,
            labels_csv=options.labels_csv, incremental=options.incremental,
            replace=options.replace, device=options.device, skip_broken=options.skip_broken,
            progress=options.progress, names=options.names, token=self.token,
            ray_workers=options.ray_workers,
        )  # fmt: skip

    def command(self, action: ReindexAction) -> str:
        flag = {"full": "", "incremental": " --incremental", "replace": " --replace"}[action]
        return f"grn reindex --milvus {self.uri}{flag}"

    def check_writable(self) -> None:
        if not is_server(self.uri):
            raise StoreBusyError(
                f"the Milvus Lite file {self.uri} is open in this service and Milvus Lite "
                "lets one process open it: stop the service and run `grn reindex --milvus`, "
                "or use a Milvus server",
                "milvus_lite_busy",
            )

    def reuse(self, model_version: str, ids: np.ndarray) -> bool:
        """Collections are not kept per model: a promotion builds a new one."""
        return False

    def init_worker_thread(self) -> None:
        """Nothing to set: the searching happens in Milvus."""

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def open_milvus(settings: Any) -> MilvusVersions:
    return MilvusVersions(
        settings.milvus_uri,
        settings.milvus_collection,
        settings.milvus_token.get_secret_value(),
        Path(settings.index_root) / "work",
    )
