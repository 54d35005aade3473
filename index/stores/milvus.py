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
boolean expressions (`index.stores.milvus_filters`); a collection property records the model
version of its vectors, and a collection of another model is refused
(`index.stores.milvus_collection`). Every client is made by `connect`, with the settings'
token (`index.stores.milvus_client`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from index.filters import SceneFilter
from index.results import SearchResult
from index.stores.base import (
    IndexNotReadyError,
    ReindexAction,
    ReindexOptions,
    StoreBusyError,
    StoreVersion,
)
from index.stores.milvus_client import (
    collection_count,
    collection_ids,
    collection_model,
    connect,
    is_server,
    milvus_answering,
    prune_versions,
    resolve_collection,
    switch_alias,
    version_name,
    version_time,
)
from index.stores.milvus_collection import MilvusCollection
from index.stores.milvus_filters import NATIVE_FILTERS, archive_meta

if TYPE_CHECKING:
    from index.stores.settings import StoreSettings
    from model.archive import Archive

T = TypeVar("T")


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
        return self._answer(lambda: self.collection.count(exact=False))  # no one writes it

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        return self._answer(lambda: self.collection.vectors(ids))

    def held_ids(self) -> np.ndarray:
        return self._answer(self.collection.ids)

    def probabilities(self, ids: Sequence[int] | np.ndarray) -> np.ndarray | None:
        return self._answer(lambda: self.collection.probabilities(ids))

    def descriptors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray | None:
        return None  # a collection keeps no descriptors: its searches are not re-ranked

    def seen(self, ids: Sequence[int] | np.ndarray) -> np.ndarray | None:
        return None

    def contains(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        present = self._answer(lambda: self.collection.present(ids, exact=False))
        return np.isin(ids, np.asarray(present, dtype=np.int64))

    def search(self, queries: np.ndarray, k: int, where: SceneFilter | None = None) -> SearchResult:
        return self._answer(lambda: self.collection.search(queries, k, where))

    def _answer(self, call: Callable[[], T]) -> T:
        """`call()`, Milvus's errors as `VectorStoreUnavailableError`. A restarted server
        loads its collections again by itself, about 30 s later; until then it refuses
        them as not loaded, so the first such answer asks it to load this one now."""
        from pymilvus.exceptions import MilvusException

        with milvus_answering(self.location):
            try:
                return call()
            except MilvusException as exc:
                if "not loaded" not in str(exc):
                    raise
                self.collection.client.load_collection(self.collection.collection)
                return call()


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
    ray_address: str | None = None,
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
    from index.row_files import CHUNK_ROWS
    from model.archive import as_archive
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
        ids = archive.ids_of(chosen)
        present = store.ids()
        new = ~np.isin(ids, present)
        gone = present[~np.isin(present, ids)]
        positions = [chosen[int(p)] for p in np.flatnonzero(new)]
        embedded = run_embedding_job(
            net, card, archive, positions, ids[new].tolist(), Path(work), device=torch_device,
            skip_broken=skip_broken, progress=progress, ray_workers=ray_workers,
            ray_address=ray_address, model_path=model_path,
        )  # fmt: skip
        row_of = dict(zip(archive.ids_of(positions).tolist(), positions, strict=True))
        metas = [archive_meta(archive, row_of[int(i)]) for i in embedded.ids]
        for start in range(0, len(embedded.ids), CHUNK_ROWS):  # the job's rows: from files
            end = start + CHUNK_ROWS
            store.add(embedded.ids[start:end], embedded.embeddings[start:end], metas[start:end],
                      embedded.probabilities[start:end])  # fmt: skip
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
            ray_workers=options.ray_workers, ray_address=options.ray_address,
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


def open_milvus(settings: StoreSettings) -> MilvusVersions:
    milvus = settings.milvus
    return MilvusVersions(
        milvus.milvus_uri,
        milvus.milvus_collection,
        milvus.milvus_token.get_secret_value(),
        Path(settings.index_root) / "work",
    )
