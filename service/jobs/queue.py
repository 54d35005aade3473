"""Durable admin jobs: imports and reindexes are rows in SQL (`jobs`, migration 0004) that
workers claim, run and report on, so a job outlives the process that asked for it, is seen
by every API process, runs once however many workers there are, and can be cancelled.

Why our own queue on the service's database rather than a library: the queue must live in
the store the service already has, PostgreSQL or the single-node SQLite default, with no
broker to deploy. The well-kept libraries each miss one: procrastinate and PgQueuer are
PostgreSQL only, RQ, Dramatiq, Celery and SAQ want Redis or RabbitMQ, and Huey's SQL storage
brings peewee beside SQLAlchemy and keeps no progress or output. The job row here is also the
record the API shows (status, progress, the last lines of output), so the queue is the few
statements below.

- Claim: one statement takes the oldest queued job and marks it running with the worker's
  name (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so concurrent workers take different jobs;
  SQLite: the database's single writer makes the conditional UPDATE atomic). A job is claimed
  by one worker only; `attempts` counts the claims.
- Lease: a running job's worker writes a heartbeat every second (with its output and
  progress). A job whose heartbeat is older than the lease (its worker was killed, or its
  machine lost) is given back to the queue, or failed with the reason when it has used its
  attempts; its next run starts the command again, which is safe because every job command
  is idempotent (an import skips what it has, a reindex builds a new version and switches to
  it only when complete).
- Cancel: a queued job is cancelled at once; a running one is asked to stop, and its worker
  terminates the command at the next heartbeat.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session

from service.jobs.specs import JobSpec, LegacyJobError, spec_from_json, spec_to_json
from service.storage.db import JobRow, utcnow
from service.storage.dialects import skip_locked

OUTPUT_LINES = 40
LEASE_SECONDS = 30.0
"""A running job whose worker has not written a heartbeat for this long is taken back."""

log = logging.getLogger("grn.jobs")


class JobConflictError(RuntimeError):
    """A job of the same kind is queued or running."""


class NoSuchJobError(LookupError):
    """No job with this id."""


@dataclass(frozen=True)
class Job:
    """A job row as the API shows it."""

    id: int
    kind: str
    spec: JobSpec | None
    """What it runs; None for a row an earlier version queued as a command line."""
    command: str
    """The `grn` command line it runs."""
    status: str
    attempts: int
    worker: str | None
    returncode: int | None
    progress: float | None
    output: list[str]
    cancel_requested: bool
    created: float
    started: float | None
    finished: float | None

    @classmethod
    def of(cls, row: JobRow) -> Job:
        def stamp(value: datetime | None) -> float | None:
            if value is None:
                return None
            return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()

        spec: JobSpec | None
        try:
            spec = spec_from_json(row.args)
            command = " ".join(["grn", *spec.argv()])
        except LegacyJobError:
            spec, command = None, " ".join(["grn", *json.loads(row.args)])
        return cls(
            id=row.id,
            kind=row.kind,
            spec=spec,
            command=command,
            status=row.status,
            attempts=row.attempts,
            worker=row.worker,
            returncode=row.returncode,
            progress=row.progress,
            output=json.loads(row.output),
            cancel_requested=row.cancel_requested,
            created=stamp(row.created_at) or 0.0,
            started=stamp(row.started_at),
            finished=stamp(row.finished_at),
        )


class JobQueue:
    """The jobs table (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def submit(self, spec: JobSpec, *, max_attempts: int = 2, exclusive: bool = True) -> Job:
        """Queue a job; with `exclusive`, refused while one of its kind is queued or
        running."""
        kind = spec.kind
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            if exclusive:
                busy = session.scalars(
                    select(JobRow)
                    .where(JobRow.kind == kind, JobRow.status.in_(("queued", "running")))
                    .with_for_update()
                ).first()
                if busy is not None:
                    raise JobConflictError(f"{kind} job {busy.id} is still {busy.status}")
            row = JobRow(
                kind=kind,
                args=spec_to_json(spec),
                status="queued",
                attempts=0,
                max_attempts=max_attempts,
                output="[]",
                cancel_requested=False,
            )
            session.add(row)
        return Job.of(row)

    def get(self, job_id: int) -> Job:
        with Session(self.engine) as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise NoSuchJobError(f"no job {job_id}")
            return Job.of(row)

    def recent(self, limit: int = 100) -> list[Job]:
        """The newest jobs first."""
        with Session(self.engine) as session:
            rows = session.scalars(select(JobRow).order_by(JobRow.id.desc()).limit(limit))
            return [Job.of(row) for row in rows]

    def claim(self, worker: str) -> Job | None:
        """The oldest queued job, now running on `worker`; None when none waits."""
        now = utcnow()
        with self.engine.begin() as connection:
            oldest = skip_locked(
                select(JobRow.id).where(JobRow.status == "queued").order_by(JobRow.id).limit(1),
                connection.dialect.name,
            ).scalar_subquery()
            claimed = connection.execute(
                update(JobRow)
                .where(JobRow.id == oldest, JobRow.status == "queued")
                .values(
                    status="running",
                    worker=worker,
                    attempts=JobRow.attempts + 1,
                    started_at=now,
                    heartbeat_at=now,
                    progress=None,
                    returncode=None,
                )
                .returning(JobRow.id)
            ).scalar()
        return None if claimed is None else self.get(int(claimed))

    def heartbeat(
        self, job_id: int, worker: str, output: Sequence[str], progress: float | None
    ) -> bool | None:
        """Record the job's output and progress; returns whether it is asked to stop (None
        when it is no longer this worker's: taken back after a lost lease)."""
        with Session(self.engine) as session, session.begin():
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.status != "running" or row.worker != worker:
                return None
            row.heartbeat_at = utcnow()
            row.output = json.dumps(list(output)[-OUTPUT_LINES:])
            row.progress = progress
            return row.cancel_requested

    def finish(
        self, job_id: int, worker: str, status: str, returncode: int | None, output: Sequence[str]
    ) -> bool:
        """Record how the job ended (only while it is still this worker's)."""
        with Session(self.engine) as session, session.begin():
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.status != "running" or row.worker != worker:
                return False
            row.status = status
            row.returncode = returncode
            row.finished_at = utcnow()
            row.output = json.dumps(list(output)[-OUTPUT_LINES:])
            if status == "succeeded":
                row.progress = 1.0
            return True

    def release(self, job_id: int, worker: str, output: Sequence[str]) -> bool:
        """Give a job this worker stopped (it is shutting down) back to the queue, its claim
        not counted."""
        with Session(self.engine) as session, session.begin():
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.status != "running" or row.worker != worker:
                return False
            row.status = "queued"
            row.attempts = max(0, row.attempts - 1)
            row.output = json.dumps(
                [*output, f"worker {worker} stopped: queued again"][-OUTPUT_LINES:]
            )
            return True

    def cancel(self, job_id: int) -> Job:
        """Cancel a queued job, or ask a running one to stop."""
        with Session(self.engine) as session, session.begin():
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None:
                raise NoSuchJobError(f"no job {job_id}")
            if row.status == "queued":
                row.status = "cancelled"
                row.finished_at = utcnow()
            elif row.status == "running":
                row.cancel_requested = True
        return self.get(job_id)

    def reap(self, lease_seconds: float = LEASE_SECONDS) -> list[int]:
        """Take back running jobs whose heartbeat is older than the lease: queued again, or
        failed when they have used their attempts. Returns their ids."""
        horizon = utcnow() - timedelta(seconds=lease_seconds)
        taken: list[int] = []
        with Session(self.engine) as session, session.begin():
            query = skip_locked(
                select(JobRow).where(JobRow.status == "running", JobRow.heartbeat_at < horizon),
                self.engine.dialect.name,
            )
            for row in session.scalars(query):
                lost = (
                    f"worker {row.worker} stopped answering "
                    f"(no heartbeat for {lease_seconds:.0f} s)"
                )
                output = [*json.loads(row.output), lost]
                if row.cancel_requested:
                    row.status = "cancelled"
                elif row.attempts < row.max_attempts:
                    row.status = "queued"
                    output.append(
                        f"queued again (attempt {row.attempts + 1} of {row.max_attempts})"
                    )
                else:
                    row.status = "failed"
                if row.status != "queued":
                    row.finished_at = utcnow()
                row.output = json.dumps(output[-OUTPUT_LINES:])
                taken.append(row.id)
        return taken

    def ping(self) -> None:
        """Raise when the jobs table is missing (`grn db upgrade` not run)."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1 FROM jobs WHERE 1 = 0"))
