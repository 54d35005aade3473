"""Settings of the service and the admin CLI, from environment variables prefixed `GRN_`
(or a `.env` file): one `Settings`, reached through the cached `get_settings()`."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from index.stores import check_store_name
from model.rerank import POOL, WEIGHT


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRN_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"
    """In production the service refuses to start without a strong `api_key`."""
    database_url: str = "sqlite:///data/grn.db"
    """SQLAlchemy URL: `sqlite:///path` (embedded default) or `postgresql://user@host/db`."""
    archive_dir: Path | None = None
    """The archive that POST /admin/import and /admin/reindex work on."""
    model_path: Path = Path("runs/ucm-head/model.safetensors")
    index_root: Path = Path("data/index")
    store_dir: Path = Path("data/store")
    """The archive store: where images added through the API (`POST /scenes`) are kept,
    content-addressed."""
    thumbnail_dir: Path = Path("data/thumbnails")
    asset_dir: Path = Path.home() / ".cache" / "grn" / "assets"
    """Browser libraries from the npm registry (`grn assets`), served under /vendor/."""
    map_tiles: str | None = None
    """The web map's basemap: an XYZ tile URL template (`https://.../{z}/{x}/{y}.png`). Unset
    (the default), the map draws the scenes' own thumbnails on their footprints and needs
    no network."""
    map_attribution: str = ""
    """The basemap's attribution, shown on the map."""
    postgis: bool = True
    """Let listings test places with PostGIS where the database has it (migration 0006);
    false: the spatial index of migration 0005 and the exact tests on the arrays, as on
    SQLite."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N: where the model runs."""

    max_upload_bytes: int = Field(default=20 * 2**20, ge=1)
    """Larger uploads get 413."""
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    """Larger images (after decoding the header) get 413: Pillow's bomb guard is set to it."""
    max_images_per_request: int = Field(default=16, ge=1)
    """Images one /classify request may carry."""

    batching: bool = True
    """Gather concurrent requests into model batches."""
    max_batch_size: int = Field(default=4, ge=1)
    """Images per model batch: on 2 CPU cores 4 gave the throughput of 8 at a lower p99
    (docs/service.md); on a GPU, raise it."""
    batch_wait_ms: float = Field(default=5.0, ge=0)
    """How long the first request of a batch waits for others to join it."""

    max_model_requests: int | None = Field(default=None, ge=0)
    """Requests that may be reading their upload, decoding, or waiting for or in the network
    at once; past it, /classify and /search by image answer 503 with Retry-After at once,
    before the upload is parsed. Unset: `MODEL_REQUESTS_PER_CORE` per CPU core when the
    network runs on the CPU, no bound on a GPU; 0: no bound (docs/service.md, "Load
    shedding")."""
    max_searches: int = Field(default=0, ge=0)
    """Searches that may run at once (0: no bound, the default); past it, /search answers
    503 with Retry-After at once."""

    io_threads: int = Field(default=16, ge=1)
    """Threads for decoding, SQL and index searches (the model has its own)."""
    tune_allocator: bool = True
    """Keep the model's buffers mapped between requests (glibc mallopt): fewer page faults."""

    embedded_worker: bool = True
    """Run queued admin jobs (imports, reindexes) in this process too, one at a time: the
    single-node default. Off where `grn worker` processes run them (compose)."""
    job_lease_seconds: float = Field(default=30.0, gt=0)
    """A running job whose worker has been silent this long is taken back and run again."""
    index_poll_seconds: float = Field(default=5.0, ge=0)
    """How often the service checks the index's `current` pointer and the model file for a
    new version (0: never; then only POST /admin/reload swaps)."""
    faiss_gpu: bool = True
    """With faiss-gpu and a GPU: unfiltered searches run on a copy of the index on all GPUs
    (sharded); filtered ones on the CPU index, as GPU indexes ignore id selectors."""
    vector_store: str = "faiss"
    """Where the archive's vectors are searched, one of `index.stores.STORES`: the FAISS
    index versions under `index_root` (embedded, the default), or a Milvus collection
    filled by `grn reindex --milvus`."""
    milvus_uri: str = ""
    """Milvus server (`http://host:19530`) or a Milvus Lite file (then opened by this process
    only: stop the service to reindex into it; for tests and small archives, as it searches
    in Python: 1.4 s a query at 100k scenes, docs/scaling.md)."""
    milvus_collection: str = "scenes"
    """The alias `grn reindex --milvus` switches to each new collection version."""
    milvus_token: SecretStr = SecretStr("")
    """`user:password` or an API token for a Milvus server with authentication."""
    nprobe: int = Field(default=64, ge=1)
    ef_search: int = Field(default=128, ge=1)
    rerank_factor: int = Field(default=10, ge=1)
    backbone_rerank: Literal["auto", "on", "off"] = "auto"
    """Re-rank a search's nearest scenes with the backbone's descriptors (model/rerank.py):
    `auto` where the index version's scenes are mostly content the model did not train on
    (another archive, folders left out of training), `on` always, `off` never. Needs a
    version that keeps descriptors (built by `grn reindex` with a head-mode model)."""
    backbone_rerank_weight: float = Field(default=WEIGHT, ge=0, le=1)
    """The GRN cosine's share of the re-ranking score; the rest is the descriptors'."""
    backbone_rerank_pool: int = Field(default=POOL, ge=1, le=1000)
    """The index's nearest scenes a search re-ranks (at least k)."""

    thumbnail_size: int = Field(default=128, ge=16, le=1024)
    cache_max_age: int = Field(default=86_400, ge=0)
    """Cache-Control max-age of images and thumbnails, in seconds."""

    api_key: SecretStr = SecretStr("")
    """Key for the admin endpoints (header `X-API-Key` or `Authorization: Bearer`); empty:
    admin endpoints are refused (403) in development and the service will not start in
    production."""
    write_key: SecretStr = SecretStr("")
    """A key that may add, correct and remove scenes (`POST`, `PATCH`, `DELETE /scenes`) but
    nothing else of the admin's; the admin key may too. Empty: only the admin key."""
    read_access: Literal["open", "key"] = "open"
    """`key`: the read endpoints (classify, search, scenes, labels, metrics) need the key too."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed to call the API from a browser (JSON list); none by default."""
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    keep_alive_seconds: float = Field(default=30.0, gt=0)
    """How long the server keeps an idle HTTP connection open."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1

    @field_validator("vector_store")
    @classmethod
    def _known_store(cls, name: str) -> str:
        return check_store_name(name)

    def with_store(
        self,
        *,
        index_root: Path | None = None,
        milvus_uri: str | None = None,
        milvus_collection: str | None = None,
    ) -> Settings:
        """These settings with a command line's store options over them: `--milvus URI`
        (`milvus_uri`) stands for GRN_VECTOR_STORE=milvus GRN_MILVUS_URI=URI."""
        update: dict[str, object] = {}
        if index_root is not None:
            update["index_root"] = index_root
        if milvus_uri is not None:
            update |= {"vector_store": "milvus", "milvus_uri": milvus_uri}
        if milvus_collection is not None:
            update["milvus_collection"] = milvus_collection
        return self.model_copy(update=update)

    def as_environment(self) -> dict[str, str]:
        """These settings as `GRN_` variables, for a child process (an admin job) to read
        the same ones."""
        env = {}
        for name, value in self.model_dump(mode="json").items():
            secret = getattr(self, name)
            if isinstance(secret, SecretStr):
                value = secret.get_secret_value()
            if value is None:
                continue
            text = value if isinstance(value, str) else json.dumps(value)
            env[f"GRN_{name.upper()}"] = text
        return env


@lru_cache
def get_settings() -> Settings:
    return Settings()
