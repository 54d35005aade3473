"""Settings of the service and the admin CLI: one `Settings`, reached through the cached
`get_settings()`, nested per component (`settings.database.database_url`,
`settings.store.faiss.nprobe`, ...).

Each setting keeps one flat environment variable, `GRN_` and its name (`GRN_DATABASE_URL`,
`GRN_NPROBE`), whichever section holds it; a `.env` file may set them too, the environment
wins. `Settings(database_url=...)` takes the same flat names. Setting names are unique across
the sections, which `leaf_paths` checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from index.stores.settings import StoreSettings
from model.rerank import POOL, WEIGHT

PREFIX = "GRN_"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DatabaseSettings(Section):
    database_url: str = "sqlite:///data/grn.db"
    """SQLAlchemy URL: `sqlite:///path` (embedded default) or `postgresql://user@host/db`."""
    postgis: bool = True
    """Let listings test places with PostGIS where the database has it (migration 0006);
    false: the spatial index of migration 0005 and the exact tests on the arrays, as on
    SQLite."""


class ModelSettings(Section):
    """The served network, where it runs, how requests are batched into it, and the
    re-ranking with its backbone's descriptors."""

    model_path: Path = Path("runs/ucm-head/model.safetensors")
    device: str = "auto"
    """auto, cpu, cuda or cuda:N: where the model runs."""
    batching: bool = True
    """Gather concurrent requests into model batches."""
    max_batch_size: int = Field(default=4, ge=1)
    """Images per model batch: on 2 CPU cores 4 gave the throughput of 8 at a lower p99
    (docs/service.md); on a GPU, raise it."""
    batch_wait_ms: float = Field(default=5.0, ge=0)
    """How long the first request of a batch waits for others to join it."""
    tune_allocator: bool = True
    """Keep the model's buffers mapped between requests (glibc mallopt): fewer page faults."""
    backbone_rerank: Literal["auto", "on", "off"] = "auto"
    """Re-rank a search's nearest scenes with the backbone's descriptors (model/rerank.py):
    `auto` where the index version's scenes are mostly content the model did not train on
    (another archive, folders left out of training), `on` always, `off` never. Needs a
    version that keeps descriptors (built by `grn reindex` with a head-mode model)."""
    backbone_rerank_weight: float = Field(default=WEIGHT, ge=0, le=1)
    """The GRN cosine's share of the re-ranking score; the rest is the descriptors'."""
    backbone_rerank_pool: int = Field(default=POOL, ge=1, le=1000)
    """The index's nearest scenes a search re-ranks (at least k)."""


class JobSettings(Section):
    """Admin jobs (imports, reindexes, training): what they work on and who runs them."""

    archive_dir: Path | None = None
    """The archive that POST /admin/import and /admin/reindex work on."""
    embedded_worker: bool = True
    """Run queued admin jobs (imports, reindexes) in this process too, one at a time: the
    single-node default. Off where `grn worker` processes run them (compose)."""
    job_lease_seconds: float = Field(default=30.0, gt=0)
    """A running job whose worker has been silent this long is taken back and run again."""
    ray_address: str | None = None
    """The Ray cluster that `grn embed` and `grn reindex` embed on (`host:port` of its head,
    as `ray start --head` prints it): set, they run on Ray as with `--ray`; unset, in one
    process unless `--ray` (docs/scaling.md)."""


class LimitSettings(Section):
    """What one request may ask, and how much runs at once."""

    max_upload_bytes: int = Field(default=20 * 2**20, ge=1)
    """Larger uploads get 413."""
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    """Larger images (after decoding the header) get 413: Pillow's bomb guard is set to it."""
    max_images_per_request: int = Field(default=16, ge=1)
    """Images one /classify request may carry."""
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


class FileSettings(Section):
    """Files the service keeps beside the database and the index."""

    store_dir: Path = Path("data/store")
    """The archive store: where images added through the API (`POST /scenes`) are kept,
    content-addressed."""
    thumbnail_dir: Path = Path("data/thumbnails")
    """The render cache: thumbnails and previews rendered as JPEG."""
    thumbnail_size: int = Field(default=128, ge=16, le=1024)
    render_cache_max_bytes: int = Field(default=2**30, ge=0)
    """The render cache's disk budget in bytes (1 GiB); past it the least recently used
    renderings are removed (0: nothing is cached)."""
    render_cache_max_files: int = Field(default=200_000, ge=0)
    """The render cache's budget in files; past it the least recently used go."""
    cache_max_age: int = Field(default=86_400, ge=0)
    """Cache-Control max-age of images and thumbnails, in seconds."""


class PageSettings(Section):
    """The web page's map and browser libraries."""

    asset_dir: Path = Path.home() / ".cache" / "grn" / "assets"
    """Browser libraries from the npm registry (`grn assets`), served under /vendor/."""
    map_tiles: str | None = None
    """The web map's basemap: an XYZ tile URL template (`https://.../{z}/{x}/{y}.png`). Unset
    (the default), the map draws the scenes' own thumbnails on their footprints and needs
    no network."""
    map_attribution: str = ""
    """The basemap's attribution, shown on the map."""


class AccessSettings(Section):
    """Who may call what."""

    environment: Literal["development", "production"] = "development"
    """In production the service refuses to start without a strong `api_key`."""
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


class ServerSettings(Section):
    """The HTTP server process."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    keep_alive_seconds: float = Field(default=30.0, gt=0)
    """How long the server keeps an idle HTTP connection open."""
    index_poll_seconds: float = Field(default=5.0, ge=0)
    """How often the service checks the index's `current` pointer and the model file for a
    new version (0: never; then only POST /admin/reload swaps)."""
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=".env", extra="ignore")

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    files: FileSettings = Field(default_factory=FileSettings)
    page: PageSettings = Field(default_factory=PageSettings)
    access: AccessSettings = Field(default_factory=AccessSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, FlatEnvironment(settings_cls))

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_names(cls, data: Any) -> Any:
        """`Settings(database_url=...)`: flat names go into their sections, over what the
        environment gave those sections."""
        if not isinstance(data, dict):
            return data
        return nest(data)

    def with_store(
        self,
        *,
        index_root: Path | None = None,
        milvus_uri: str | None = None,
        milvus_collection: str | None = None,
    ) -> Settings:
        """These settings with a command line's store options over them: `--milvus URI`
        (`milvus_uri`) stands for GRN_VECTOR_STORE=milvus GRN_MILVUS_URI=URI."""
        flat = {"index_root": index_root, "milvus_collection": milvus_collection}
        if milvus_uri is not None:
            flat |= {"vector_store": "milvus", "milvus_uri": milvus_uri}
        given = {name: value for name, value in flat.items() if value is not None}
        return type(self).model_validate(nest(self.flat() | given))

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name, as the sections hold it (secrets still wrapped)."""
        values = {}
        for name, path in leaf_paths().items():
            value: Any = self
            for step in path:
                value = getattr(value, step)
            values[name] = value
        return values

    def as_environment(self) -> dict[str, str]:
        """These settings as `GRN_` variables, for a child process (an admin job) to read
        the same ones."""
        env = {}
        for name, value in self.flat().items():
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value is None:
                continue
            if isinstance(value, Path):
                value = str(value)
            env[f"{PREFIX}{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        return env


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _paths(model: type[BaseModel], prefix: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    for name, field in model.model_fields.items():
        section = _section_type(field.annotation)
        below = _paths(section, (*prefix, name)) if section else {name: (*prefix, name)}
        clash = found.keys() & below.keys()
        if clash:
            raise TypeError(f"settings named twice: {', '.join(sorted(clash))}")
        found |= below
    return found


@lru_cache
def leaf_paths() -> dict[str, tuple[str, ...]]:
    """Each setting's flat name -> its path through the sections (`nprobe` ->
    `("store", "faiss", "nprobe")`)."""
    return _paths(Settings, ())


def variable_of(loc: tuple[int | str, ...]) -> str:
    """The environment variable behind a validation error's location in the sections
    (`("store", "faiss", "nprobe")` -> `GRN_NPROBE`)."""
    names = leaf_paths()
    leaf = next((str(part) for part in reversed(loc) if part in names), ".".join(map(str, loc)))
    return f"{PREFIX}{leaf.upper()}"


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """`flat`'s setting names moved to their places in the sections (merged with what is
    there); other keys stay as they are."""
    paths = leaf_paths()
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        if key not in paths:
            if isinstance(value, BaseModel):
                value = value.model_dump()
            nested[key] = _merge(nested.get(key, {}), value) if isinstance(value, dict) else value
            continue
        *sections, name = paths[key]
        place = nested
        for section in sections:
            place = place.setdefault(section, {})
        place[name] = value
    return nested


def _merge(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    merged = dict(into)
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _is_complex(annotation: Any) -> bool:
    """Whether an environment variable for this type holds JSON (a list or a dict)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_complex(arg) for arg in typing.get_args(annotation))
    return typing.get_origin(annotation) in (list, dict) or annotation in (list, dict)


def _dotenv(env_file: Any) -> dict[str, str | None]:
    files = [env_file] if isinstance(env_file, str | Path) else list(env_file or ())
    found: dict[str, str | None] = {}
    for name in files:
        found |= dotenv_values(name)
    return found


class FlatEnvironment(PydanticBaseSettingsSource):
    """`GRN_NAME` variables (the environment over the `.env` file, any case) for every
    setting, wherever its section puts it."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # the whole tree is read at once, in __call__

    def __call__(self) -> dict[str, Any]:
        env_file = self.config.get("env_file")
        found = {
            key.lower(): value
            for source in (_dotenv(env_file), os.environ)
            for key, value in source.items()
            if value is not None
        }
        flat = {}
        for name, path in leaf_paths().items():
            raw = found.get(f"{PREFIX}{name}".lower())
            if raw is None:
                continue
            section: type[BaseModel] = Settings
            for step in path[:-1]:
                section = _section_type(section.model_fields[step].annotation) or section
            flat[name] = raw
            if _is_complex(section.model_fields[path[-1]].annotation):
                with contextlib.suppress(json.JSONDecodeError):  # else: "should be a list"
                    flat[name] = json.loads(raw)
        return nest(flat)


@lru_cache
def get_settings() -> Settings:
    return Settings()
