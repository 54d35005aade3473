"""The SQL store: scenes, their labels, the archives they came from, and the model and index
versions the service has used. SQLAlchemy 2 typed ORM; the schema itself is created and
changed only by the Alembic revisions in `migrations/` (`grn db upgrade`).

Scene ids are the vector stores' ids (`model.archive.scene_id`, a 63-bit hash of the image
stem), so a search result joins its metadata with no side table.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ArchiveImport(Base):
    """One run of `grn import`: where the scenes came from, and how it went."""

    __tablename__ = "archives"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    root: Mapped[str] = mapped_column(String(1024))
    labels_csv: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(16))
    """importing, complete or failed."""
    scenes_added: Mapped[int] = mapped_column(Integer, default=0)
    scenes_skipped: Mapped[int] = mapped_column(Integer, default=0)
    """Already present (an import is idempotent)."""
    broken: Mapped[str] = mapped_column(Text, default="[]")
    """JSON list of the files that could not be read: {path, error}."""
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Label(Base):
    __tablename__ = "labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)


class Scene(Base):
    __tablename__ = "scenes"
    __table_args__ = (Index("ix_scenes_acquired_id", "acquired", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(512), unique=True)
    """The image stem, unique within the store."""
    folder: Mapped[str] = mapped_column("scene", String(200), index=True)
    """The scene folder (class): the `scene` column of the archive's labels file (and the
    API's `scene` field)."""
    split: Mapped[str] = mapped_column(String(16))
    archive_id: Mapped[int] = mapped_column(ForeignKey("archives.id"), index=True)
    path: Mapped[str] = mapped_column(String(1024))
    """The image file, relative to its archive's root."""
    media_type: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    checksum: Mapped[str] = mapped_column(String(64), index=True)
    """SHA-256 of the image file: the ETag of its image and thumbnail."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    meta: Mapped[str | None] = mapped_column(Text, default=None)
    """Free metadata given when the scene was added through the API (a JSON object), or
    the properties of the STAC item it came from."""
    acquired: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    """When its pixels were taken (UTC; migration 0007); None: not known. Indexed with the id
    (migration 0009): the time filters and the listings by time read that index."""

    archive: Mapped[ArchiveImport] = relationship(lazy="joined")
    labels: Mapped[list[Label]] = relationship(
        secondary="scene_labels", lazy="selectin", order_by="Label.name"
    )
    footprint: Mapped[SceneFootprint | None] = relationship(lazy="selectin", viewonly=True)

    @property
    def label_names(self) -> list[str]:
        """Its labels' names, by name (as a listed scene gives them)."""
        return [label.name for label in self.labels]


class SceneLabel(Base):
    __tablename__ = "scene_labels"

    scene_id: Mapped[int] = mapped_column(
        ForeignKey("scenes.id", ondelete="CASCADE"), primary_key=True
    )
    label_id: Mapped[int] = mapped_column(
        ForeignKey("labels.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class SceneVector(Base):
    """The embedding of a scene the service added (`POST /scenes`), written with its row, so
    every process searches it before an index version holds it (migration 0003)."""

    __tablename__ = "scene_vectors"

    scene_id: Mapped[int] = mapped_column(
        ForeignKey("scenes.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    """float32, the model's embedding dimension."""
    probabilities: Mapped[bytes | None] = mapped_column(LargeBinary)
    """float32, one per label of the model card."""


class SceneFootprint(Base):
    """Where a scene lies (migration 0005): its footprint in WGS84 as GeoJSON, the footprint's
    bounds and centre as numbers (the bounds indexed for box queries: an R*Tree on SQLite, a
    GiST box on PostgreSQL), and for a scene cut from a raster, the raster, its CRS and the
    pixel window."""

    __tablename__ = "scene_footprints"

    scene_id: Mapped[int] = mapped_column(
        ForeignKey("scenes.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    min_lon: Mapped[float] = mapped_column(Float(53))
    min_lat: Mapped[float] = mapped_column(Float(53))
    max_lon: Mapped[float] = mapped_column(Float(53))
    max_lat: Mapped[float] = mapped_column(Float(53))
    lon: Mapped[float] = mapped_column(Float(53))
    """The footprint's centroid."""
    lat: Mapped[float] = mapped_column(Float(53))
    geometry: Mapped[str] = mapped_column(Text)
    """GeoJSON (Polygon or Point), WGS84."""
    crs: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(1024))
    window: Mapped[str | None] = mapped_column(String(64))
    """col_off,row_off,width,height in the source raster."""


class CatalogState(Base):
    """One row: `generation` rises with every change to scenes, labels or scene labels
    (database triggers, migration 0002), so a process holding the metadata in arrays
    (`service.storage.scene_table`) knows when to reload it; `CatalogChange` says what changed."""

    __tablename__ = "catalog_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger)


class CatalogChange(Base):
    """A scene a change touched, at the generation it raised (written by triggers); a NULL
    scene id stands for every scene (labels changed, a table truncated)."""

    __tablename__ = "catalog_changes"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    generation: Mapped[int] = mapped_column(BigInteger, index=True)
    scene_id: Mapped[int | None] = mapped_column(BigInteger)


class JobRow(Base):
    """An admin job (import, reindex): queued by the API or the CLI, claimed and run by one
    worker (`service/jobs/queue.py`, migration 0004)."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    args: Mapped[str] = mapped_column(Text)
    """The `grn` command's arguments, a JSON list."""
    status: Mapped[str] = mapped_column(String(16), index=True)
    """queued, running, succeeded, failed or cancelled."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=2)
    worker: Mapped[str | None] = mapped_column(String(200))
    """The worker running it (host:pid:tag), or that ran it last."""
    returncode: Mapped[int | None] = mapped_column(Integer)
    progress: Mapped[float | None] = mapped_column(Float)
    """0 to 1, from its last progress line (`service.jobs.progress`), when it reports one."""
    output: Mapped[str] = mapped_column(Text, default="[]")
    """The last lines of its output, a JSON list."""
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ModelVersion(Base):
    """A model the service or the CLI has loaded."""

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    backbone: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1024))
    card: Mapped[str] = mapped_column(Text)
    """The model card as JSON."""
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IndexBuild(Base):
    """An index version the service or the CLI has loaded or built."""

    __tablename__ = "index_builds"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_version: Mapped[str] = mapped_column(ForeignKey("model_versions.version"), index=True)
    factory: Mapped[str] = mapped_column(String(200))
    count: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[str] = mapped_column(String(1024))
    created: Mapped[str] = mapped_column(String(32))
    """When the build wrote its manifest (from the manifest, UTC)."""
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ConceptRow(Base):
    """A saved concept (migration 0008): its name, the scenes that taught it, and the probe
    they fitted (`model.probe`) with the model version whose embeddings it was fitted on."""

    __tablename__ = "concepts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    positives: Mapped[str] = mapped_column(Text)
    """The scenes that show it: a JSON list of scene ids (as strings of digits)."""
    negatives: Mapped[str] = mapped_column(Text)
    """The scenes that do not, the same way."""
    threshold: Mapped[float] = mapped_column(Float)
    """The probe's score from which a scene counts as showing it (a filter's default)."""
    model_version: Mapped[str] = mapped_column(String(64))
    """The model whose embeddings the probe was fitted on."""
    index_version: Mapped[str] = mapped_column(String(64))
    """The index version it was fitted from."""
    weights: Mapped[bytes] = mapped_column(LargeBinary)
    """The probe's weights, float32, one per dimension of the vectors the model's index
    holds."""
    bias: Mapped[float] = mapped_column(Float(53))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    """When it was last changed: renamed, refined or re-fitted."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # readers never wait for the writer (an import while the service answers)
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for SQLite or PostgreSQL (psycopg 3: `postgresql+psycopg://...`)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"check_same_thread": False})
    else:
        # a database that is down must fail requests in seconds, not hang them
        kwargs.setdefault("connect_args", {"connect_timeout": 3})
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine
