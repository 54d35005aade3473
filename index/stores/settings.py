"""The vector store's settings, typed: which store serves (`vector_store`), where its files
live (`index_root`), and one class per store for its own options.

Plain pydantic models, validated but not read from anywhere: the service reads them from its
`GRN_` environment variables (`service.settings`), a benchmark or test builds them directly.
`index.stores.open_store` opens the store they name.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from index.stores.registry import check_store_name
from index.vectors import SearchSettings


class FaissSettings(BaseModel):
    """The FAISS store's search parameters and its use of GPUs."""

    model_config = ConfigDict(extra="forbid")

    nprobe: int = Field(default=SearchSettings.nprobe, ge=1)
    """IVF lists visited per query."""
    ef_search: int = Field(default=SearchSettings.ef_search, ge=1)
    """HNSW candidate list length."""
    rerank_factor: int = Field(default=SearchSettings.rerank_factor, ge=1)
    """With full vectors beside a compressed (PQ) index: candidates re-scored per result."""
    faiss_gpu: bool = True
    """With faiss-gpu and a GPU: unfiltered searches run on a copy of the index on all GPUs
    (sharded); filtered ones on the CPU index, as GPU indexes ignore id selectors."""

    def search(self) -> SearchSettings:
        return SearchSettings(
            nprobe=self.nprobe, ef_search=self.ef_search, rerank_factor=self.rerank_factor
        )


class MilvusSettings(BaseModel):
    """Where the Milvus store's collections are, and how to sign in."""

    model_config = ConfigDict(extra="forbid")

    milvus_uri: str = ""
    """Milvus server (`http://host:19530`) or a Milvus Lite file (then opened by this process
    only: stop the service to reindex into it; for tests and small archives, as it searches
    in Python: 1.4 s a query at 100k scenes, docs/scaling.md)."""
    milvus_collection: str = "scenes"
    """The alias `grn reindex --milvus` switches to each new collection version."""
    milvus_token: SecretStr = SecretStr("")
    """`user:password` or an API token for a Milvus server with authentication."""


class StoreSettings(BaseModel):
    """The store that serves the archive's vectors, and each store's own settings."""

    model_config = ConfigDict(extra="forbid")

    vector_store: str = "faiss"
    """Where the archive's vectors are searched, one of `index.stores.STORES`: the FAISS
    index versions under `index_root` (embedded, the default), or a Milvus collection
    filled by `grn reindex --milvus`."""
    index_root: Path = Path("data/index")
    """FAISS's index versions; Milvus keeps its embedding shards under `work/` here."""
    faiss: FaissSettings = Field(default_factory=FaissSettings)
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)

    @field_validator("vector_store")
    @classmethod
    def _known_store(cls, name: str) -> str:
        return check_store_name(name)
