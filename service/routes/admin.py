"""Admin endpoints (behind the API key): reload, import and reindex jobs, job status.

Import and reindex run as child `grn` processes with the service's own settings (a crash of a
job never takes the service down); a finished reindex is taken up at once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Request

from service.deps import ADMIN, JobsDep, RuntimeDep, SettingsDep
from service.errors import BadRequestError, documented
from service.jobs import NoSuchJobError
from service.lifespan import refresh_served
from service.schemas import JobOut, ReloadResponse
from service.settings import Settings

router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=ADMIN, responses=documented(401, 403)
)
JOB_ERRORS = documented(400, 409, 422)


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
    jobs: JobsDep,
    incremental: Annotated[
        bool, Body(embed=True, description="Add new scenes and drop gone ones only.")
    ] = False,
) -> JobOut:
    """Start `grn reindex --catalog`: the scenes SQL holds (every import's, and those added
    through the API, as corrected), embedded by the served model into the configured vector
    store (a child process); the new index is taken up when it completes."""
    runtime.store.check_writable()
    args = [
        "reindex",
        "--model",
        str(settings.model_path),
        "--catalog",
        "--database-url",
        settings.database_url,
        "--index-root",
        str(settings.index_root),
        "--quiet",
        "--incremental" if incremental else "--replace",
    ]

    async def take_up() -> None:
        await refresh_served(request.app)

    job = jobs.start("reindex", args, settings.as_environment(), on_success=take_up)
    return JobOut(**job.describe())


@router.post("/import", status_code=202, response_model=JobOut, responses=JOB_ERRORS)
async def admin_import(
    settings: SettingsDep,
    jobs: JobsDep,
    archive: Annotated[
        str | None,
        Body(embed=True, description="The archive folder (default GRN_ARCHIVE_DIR)."),
    ] = None,
) -> JobOut:
    """Start `grn import` of an archive folder (default GRN_ARCHIVE_DIR) into SQL."""
    folder = archive_folder(settings, archive)
    args = ["import", str(folder), "--database-url", settings.database_url, "--quiet"]
    job = jobs.start("import", args, settings.as_environment())
    return JobOut(**job.describe())


@router.get("/jobs", response_model=list[JobOut])
async def admin_jobs(jobs: JobsDep) -> list[JobOut]:
    """Admin jobs started by this process, newest first."""
    return [JobOut(**job.describe()) for job in sorted(jobs.jobs.values(), key=lambda j: -j.id)]


@router.get("/jobs/{job_id}", response_model=JobOut, responses=documented(404, 422))
async def admin_job(jobs: JobsDep, job_id: int) -> JobOut:
    """One admin job: status, return code and the last lines of its output."""
    job = jobs.jobs.get(job_id)
    if job is None:
        raise NoSuchJobError(f"no job {job_id}")
    return JobOut(**job.describe())


def archive_folder(settings: Settings, given: str | None) -> Path:
    folder = Path(given) if given else settings.archive_dir
    if folder is None:
        raise BadRequestError("no archive given and GRN_ARCHIVE_DIR is not set", "no_archive")
    if not (folder / "labels.csv").is_file():
        raise BadRequestError(f"{folder} is not an archive: it has no labels.csv", "no_archive")
    return folder
