"""Admin endpoints (behind the API key): reload, import and reindex jobs, job status and
cancelling.

Import, reindex, retrain and rollback are durable jobs (`service.jobs.queue`): typed specs
(`service.jobs.specs`) kept as rows in SQL, that a worker (the service's embedded one, or
`grn worker` processes) runs as a child `grn` process with the service's settings, so a
crash of a job never takes the service down, a restart loses no job and every API process
sees every job; a finished reindex is taken up at once by the process whose worker ran it,
and by the others at their next poll."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

from fastapi import APIRouter, Body, Query, Request
from fastapi import Path as Path_

from service.api.deps import ADMIN, RuntimeDep, SettingsDep, in_thread
from service.api.errors import documented
from service.api.lifespan import refresh_served
from service.api.schemas.admin import ImportRequest, JobOut, ReloadResponse
from service.errors import BadRequestError
from service.jobs.queue import JobQueue
from service.jobs.specs import ImportJob, ReindexJob, RollbackJob, StacImportJob, TrainJob
from service.settings import Settings

router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=ADMIN, responses=documented(401, 403)
)
JOB_ERRORS = documented(400, 409, 422)


def job_queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.job_queue
    return queue


@router.post("/reload", response_model=ReloadResponse)
async def reload(runtime: RuntimeDep, request: Request) -> ReloadResponse:
    """Load the newest model and index now (the service also polls for them)."""
    swapped = await refresh_served(request.app)
    snapshot = runtime.snapshot
    return ReloadResponse(
        swapped=swapped,
        model_version=snapshot.model_version if snapshot else None,
        index_version=snapshot.index_version if snapshot else None,
        problem=runtime.problem,
    )


@router.post("/reindex", status_code=202, response_model=JobOut, responses=JOB_ERRORS)
async def admin_reindex(
    request: Request,
    settings: SettingsDep,
    runtime: RuntimeDep,
    incremental: Annotated[
        bool, Body(embed=True, description="Add new scenes and drop gone ones only.")
    ] = False,
) -> JobOut:
    """Queue `grn reindex --catalog`: the scenes SQL holds (every import's, and those added
    through the API, as corrected), embedded by the served model into the configured vector
    store; the new index is taken up when it completes."""
    runtime.store.check_writable()
    spec = ReindexJob(
        model=settings.model.model_path,
        index_root=settings.store.index_root,
        incremental=incremental,
    )
    return JobOut.of(await in_thread(job_queue(request).submit, spec))


@router.post("/import", status_code=202, response_model=JobOut, responses=JOB_ERRORS)
async def admin_import(
    request: Request, settings: SettingsDep, body: ImportRequest | None = None
) -> JobOut:
    """Queue `grn import` of an archive folder (default GRN_ARCHIVE_DIR) into SQL, or with
    `stac`, `grn import --stac`: each item's raster tiled (under GRN_STORE_DIR/stac) and
    imported with its footprint, date and properties; the items that cannot be imported are
    named in the job's output with their problem, the others imported; again, nothing is
    added twice."""
    given = body or ImportRequest()
    spec: ImportJob | StacImportJob
    if given.stac is not None:
        if given.archive is not None:
            raise BadRequestError("give an archive or a stac catalog, not both", "bad_import")
        source = stac_source(given.stac)
        spec = StacImportJob(source=source, asset=given.asset, max_cloud=given.max_cloud)
    elif given.asset is not None or given.max_cloud is not None:
        raise BadRequestError("asset and max_cloud go with stac", "bad_import")
    else:
        spec = ImportJob(archive=archive_folder(settings, given.archive))
    return JobOut.of(await in_thread(job_queue(request).submit, spec))


@router.post("/train", status_code=202, response_model=JobOut, responses=JOB_ERRORS)
async def admin_train(
    request: Request,
    force: Annotated[
        bool, Body(embed=True, description="Promote the new model whatever the gate says.")
    ] = False,
    epochs: Annotated[
        int | None, Body(embed=True, ge=1, le=1000, description="Default: the mode's.")
    ] = None,
) -> JobOut:
    """Queue `grn retrain`: train on the scenes and labels SQL holds now (corrections
    included), then promote the model (with an index of its own) only when it is not worse
    than the served one on the val split, or when `force`. A refused model ends the job as
    `failed`, its output saying which figure was lower."""
    spec = TrainJob(force=force, epochs=epochs)
    return JobOut.of(await in_thread(job_queue(request).submit, spec))


@router.post("/rollback", status_code=202, response_model=JobOut, responses=JOB_ERRORS)
async def admin_rollback(request: Request) -> JobOut:
    """Queue `grn rollback`: the model served before the current one goes back into service
    with its index."""
    return JobOut.of(await in_thread(job_queue(request).submit, RollbackJob()))


@router.get("/jobs", response_model=list[JobOut])
async def admin_jobs(
    request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[JobOut]:
    """Admin jobs, newest first, whichever process queued or ran them."""
    return [JobOut.of(job) for job in await in_thread(job_queue(request).recent, limit)]


@router.get("/jobs/{job_id}", response_model=JobOut, responses=documented(404, 422))
async def admin_job(request: Request, job_id: Annotated[int, Path_(ge=1)]) -> JobOut:
    """One admin job: status, progress, attempts, return code and the last lines of its
    output."""
    return JobOut.of(await in_thread(job_queue(request).get, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, responses=documented(404, 422))
async def admin_cancel(request: Request, job_id: Annotated[int, Path_(ge=1)]) -> JobOut:
    """Cancel a queued job at once, or ask a running one to stop (its worker terminates the
    command within a second or two; `status` then says `cancelled`)."""
    return JobOut.of(await in_thread(job_queue(request).cancel, job_id))


def archive_folder(settings: Settings, given: str | None) -> Path:
    folder = Path(given) if given else settings.jobs.archive_dir
    if folder is None:
        raise BadRequestError("no archive given and GRN_ARCHIVE_DIR is not set", "no_archive")
    if not (folder / "labels.csv").is_file():
        raise BadRequestError(f"{folder} is not an archive: it has no labels.csv", "no_archive")
    return folder


def stac_source(given: str) -> str:
    """A STAC catalog to import: a URL as given (the job reads it, and says when it cannot),
    a path made absolute, refused when no such file is here."""
    if urlparse(given).scheme in ("http", "https"):
        return given
    path = Path(given).expanduser().resolve()
    if not path.is_file():
        raise BadRequestError(f"{given}: no such STAC file here", "no_catalog")
    return str(path)
