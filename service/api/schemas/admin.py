"""The bodies of the operations and admin endpoints: health, readiness, reloads and jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from service.api.schemas.common import Schema

if TYPE_CHECKING:
    from service.jobs.queue import Job


class Health(Schema):
    status: str
    """`ok` while the process answers."""


class Readiness(Schema):
    status: str
    """`ready`."""
    model_version: str
    """The model in service."""
    index_version: str
    """The index version in service."""
    index_count: int
    """Vectors in the index."""
    schema_revision: str
    """The database's Alembic revision."""
    scenes: int
    """Scenes in SQL."""
    warning: str | None
    """A newer model or index on disk that cannot be served yet, and why."""


class ReloadResponse(Schema):
    swapped: bool
    """Whether a new model or index was taken up."""
    model_version: str | None
    """The model in service now."""
    index_version: str | None
    """The index version in service now."""
    problem: str | None
    """Why the newest model or index is not in service, if it is not."""


class ImportRequest(Schema):
    """What `POST /admin/import` imports: an archive folder, or a STAC catalog."""

    archive: str | None = None
    """The archive folder (default GRN_ARCHIVE_DIR)."""
    stac: str | None = Field(default=None, min_length=1, max_length=2000)
    """Instead of an archive: a STAC catalog, collection, item collection or item, by path
    or URL (as `grn import --stac`)."""
    asset: str | None = Field(default=None, min_length=1, max_length=200)
    """With `stac`: the asset to tile (default: visual, else the first GeoTIFF data asset)."""
    max_cloud: float | None = Field(default=None, ge=0, le=100)
    """With `stac`: leave out the items whose eo:cloud_cover is above this, or not given."""


class JobOut(Schema):
    id: int
    """The job's number (a row in SQL: every API process and worker sees it)."""
    kind: str
    """import, import-stac, reindex, train or rollback."""
    command: str
    """The `grn` command line it runs."""
    status: str
    """queued, running, succeeded, failed or cancelled."""
    attempts: int
    """How many times a worker has taken it (a job whose worker died runs again)."""
    worker: str | None
    """The worker running it, or that ran it last (host:pid)."""
    progress: float | None
    """0 to 1, the share of its current step done (from its progress lines)."""
    cancel_requested: bool
    """A cancel was asked for while it ran: its worker is stopping it."""
    returncode: int | None
    """The process's exit status, once finished."""
    created: float
    """Unix time it was queued."""
    started: float | None
    """Unix time a worker last took it."""
    finished: float | None
    """Unix time, once finished."""
    output: list[str]
    """The last lines the job printed."""

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(
            id=job.id, kind=job.kind, command=job.command, status=job.status,
            attempts=job.attempts, worker=job.worker, progress=job.progress,
            cancel_requested=job.cancel_requested, returncode=job.returncode,
            created=job.created, started=job.started, finished=job.finished, output=job.output,
        )  # fmt: skip
