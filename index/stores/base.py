"""The vector-store interface: what the service, the CLI and the jobs ask of a store.

A store holds versions of an archive's vectors (FAISS index folders, Milvus collections
behind an alias), each built by one model. `current` says which version is in service,
`open` loads one for searching (a `ServedIndex`, bound to that version so a request keeps
it across a rebuild), `ids` lists a version's scene ids (status and drift checks), and
`reindex` builds or updates a version from an archive and puts it in service.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from index.filters import SceneFilter
from index.results import SearchResult

if TYPE_CHECKING:
    from model.archive import Archive
    from model.card import ModelCard

ReindexAction = Literal["full", "incremental", "replace"]


class IndexNotReadyError(RuntimeError):
    """No usable index version exists (never built, or its files are damaged)."""


class IndexModelMismatchError(RuntimeError):
    """The index was built from another model's embeddings than the one in use."""


class VectorStoreUnavailableError(RuntimeError):
    """The vector store did not answer (a server down or unreachable)."""


class StoreBusyError(ValueError):
    """The store cannot take this operation now; `code` names why for the API's answer."""

    def __init__(self, message: str, code: str = "store_busy") -> None:
        super().__init__(message)
        self.code = code


class UnknownSceneError(KeyError):
    """A scene id the index does not hold."""


@dataclass(frozen=True)
class StoreVersion:
    """The version in service."""

    version: str
    model_version: str | None
    """The model its vectors come from (None if unrecorded)."""
    description: str
    """One line for `grn status`."""


class ServedIndex(Protocol):
    """One version of a store as the service searches it."""

    native_filters: frozenset[str]
    """The `SceneFilter` conditions the store evaluates itself; the service resolves a
    filter that uses any other one into `allow_ids` in SQL."""

    @property
    def version(self) -> str: ...

    @property
    def model_version(self) -> str: ...

    @property
    def factory(self) -> str: ...

    @property
    def created(self) -> str: ...

    @property
    def count(self) -> int: ...

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored vectors of scenes, in the order given (UnknownSceneError if one is
        not held)."""
        ...

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Which of these scene ids the version holds (a boolean array)."""
        ...

    def held_ids(self) -> np.ndarray:
        """Every scene id the version holds, sorted."""
        ...

    def probabilities(self, ids: Sequence[int] | np.ndarray) -> np.ndarray | None:
        """The model's label probabilities of held scenes, (len(ids), labels) in the order
        given (columns: the model card's labels); None when the version did not keep them
        (built before they were kept)."""
        ...

    def descriptors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray | None:
        """The backbone descriptors of held scenes, (len(ids), F) float32 unit rows in the
        order given (`model.rerank`); None when the version did not keep them."""
        ...

    def seen(self, ids: Sequence[int] | np.ndarray) -> np.ndarray | None:
        """Which of these held scenes show content the version's model trained on (a
        boolean array; None: not recorded); `model.rerank` decides from it."""
        ...

    def search(self, queries: np.ndarray, k: int, where: SceneFilter | None = None) -> SearchResult:
        """Top-k per query (k from 1 to MAX_K) among the scenes that pass `where`, which
        uses only `native_filters`."""
        ...


@dataclass(frozen=True)
class ReindexOptions:
    """How a reindex runs. Full (default): a new version, put in service when complete.
    `incremental`: the version in service updated, new scenes added and gone ones removed.
    `replace` lets a full build take the place of a version that holds scenes where the
    store would otherwise refuse."""

    labels_csv: str | Path | None = None
    incremental: bool = False
    replace: bool = False
    names: Sequence[str] | None = None
    """Only these image stems of the archive (the rest count as gone)."""
    build: Any = None
    """Store-specific build settings (`index.stores.faiss_build.ReindexSettings` for FAISS)."""
    device: str = "auto"
    skip_broken: bool = False
    progress: bool = True
    ray_workers: int | None = None
    """Embed on Ray with this many actors."""
    ray_address: str | None = None
    """The Ray cluster they run on (None: RAY_ADDRESS, else Ray on this machine)."""


class ReindexReport(Protocol):
    @property
    def name(self) -> str:
        """What was built, in words: `index <version>`, `collection <alias>`."""
        ...

    @property
    def count(self) -> int: ...

    @property
    def added(self) -> int: ...

    @property
    def removed(self) -> int: ...

    @property
    def broken(self) -> list[Any]: ...

    def summary(self) -> str:
        """One line for the command line."""
        ...


class VectorStore(Protocol):
    kind: str
    """The name it is registered under (GRN_VECTOR_STORE)."""

    @property
    def location(self) -> str:
        """Where it lives, in words (a folder, a server and collection)."""
        ...

    def current(self) -> StoreVersion | None:
        """The version in service; None when none was built. Raises IndexNotReadyError
        when it is damaged and VectorStoreUnavailableError when the store does not answer."""
        ...

    def describe_empty(self) -> str:
        """What `current` returning None means here, in words."""
        ...

    def ids(self, version: str) -> np.ndarray:
        """The sorted scene ids a version holds."""
        ...

    def open(self, version: str, model_version: str) -> ServedIndex:
        """A version for searching; refused when it was built by another model."""
        ...

    def reindex(
        self, model_path: str | Path, archive_dir: str | Path | Archive, options: ReindexOptions
    ) -> ReindexReport:
        """Embed the archive's scenes (a folder, or an `Archive` such as the scenes SQL
        holds) with the model and put them in service (see `ReindexOptions`)."""
        ...

    def command(self, action: ReindexAction) -> str:
        """The `grn reindex` command line that does `action` on this store."""
        ...

    def check_writable(self) -> None:
        """Raise StoreBusyError when another process (a reindex job) cannot write to the
        store while this one holds it."""
        ...

    def reuse(self, model_version: str, ids: np.ndarray) -> bool:
        """Put back in service a kept version that `model_version` built over exactly the
        sorted `ids`, and say whether there was one (a promotion or rollback then needs no
        new build)."""
        ...

    def init_worker_thread(self) -> None:
        """Set up a thread that will search (the service's I/O threads)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ModelIndex:
    """A model (its card) and the index version it built, as searches read them: the
    service's runtime holds one with the network too; a search that embeds nothing needs no
    more than this."""

    card: ModelCard
    searcher: ServedIndex

    @property
    def model_version(self) -> str:
        return self.card.version

    @property
    def index_version(self) -> str:
        return self.searcher.version
