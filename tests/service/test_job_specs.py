"""Admin jobs are typed specs (service/jobs/specs.py): the queue keeps them as JSON, shows
the command they run, and refuses to run a row an earlier version queued as a command line;
the admin routes queue specs, never command lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from service.jobs.queue import JobQueue
from service.jobs.specs import (
    LEGACY,
    ImportJob,
    LegacyJobError,
    ReindexJob,
    RollbackJob,
    StacImportJob,
    TrainJob,
    spec_from_json,
    spec_to_json,
)
from service.jobs.worker import Worker
from service.storage.db import make_engine
from service.storage.migrate import upgrade


@pytest.fixture
def queue(database_url: str) -> JobQueue:
    engine = make_engine(database_url)
    upgrade(engine)
    return JobQueue(engine)


SPECS = [
    ImportJob(archive=Path("/data/archive"), labels=Path("/data/archive/other.csv")),
    ReindexJob(model=Path("runs/m/model.safetensors"), index_root=Path("data/index")),
    ReindexJob(model=Path("m.safetensors"), incremental=True),
    TrainJob(force=True, epochs=3),
    RollbackJob(),
    StacImportJob(source="https://example.org/catalog.json", asset="data", max_cloud=12.5),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.kind)
def test_a_spec_round_trips_through_its_json(spec: object) -> None:
    assert spec_from_json(spec_to_json(spec)) == spec  # type: ignore[arg-type]


def test_the_command_a_spec_runs() -> None:
    assert SPECS[0].argv() == ["import", "/data/archive", "--labels", "/data/archive/other.csv"]
    assert SPECS[2].argv() == ["reindex", "--model", "m.safetensors", "--catalog", "--incremental"]
    assert SPECS[3].argv() == ["retrain", "--force", "--quiet", "--epochs", "3"]
    assert SPECS[5].argv() == [
        "import", "--stac", "https://example.org/catalog.json", "--asset", "data",
        "--max-cloud", "12.5",
    ]  # fmt: skip
    assert StacImportJob(source="c.json", tiles=Path("t")).argv() == [
        "import", "--stac", "c.json", "--tiles", "t"
    ]  # fmt: skip


def test_a_bad_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="epochs"):
        TrainJob(epochs=0)
    with pytest.raises(ValueError, match="max_cloud"):
        StacImportJob(source="c.json", max_cloud=101)
    with pytest.raises(ValueError, match="kind"):
        spec_from_json('{"kind": "format-disk"}')
    with pytest.raises(LegacyJobError):
        spec_from_json('["import", "/data"]')


def test_the_queue_keeps_the_spec_and_shows_its_command(queue: JobQueue) -> None:
    job = queue.submit(SPECS[1])
    again = queue.get(job.id)
    assert again.spec == SPECS[1] and again.kind == "reindex"
    assert (
        again.command == "grn reindex --model runs/m/model.safetensors --catalog "
        "--index-root data/index --replace"
    )
    with queue.engine.connect() as connection:
        stored = connection.execute(text("SELECT args FROM jobs")).scalar_one()
    assert json.loads(stored)["kind"] == "reindex"


def test_a_row_queued_as_a_command_line_is_shown_and_failed_not_run(queue: JobQueue) -> None:
    with queue.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (kind, args, status, attempts, max_attempts, output, "
                "cancel_requested, created_at) VALUES ('import', :args, 'queued', 0, 2, '[]', "
                ":no, CURRENT_TIMESTAMP)"
            ),
            {"args": json.dumps(["import", "/nowhere"]), "no": False},
        )
    (legacy,) = queue.recent()
    assert legacy.spec is None and legacy.command == "grn import /nowhere"
    ran = Worker(queue, {}, name="test").run_one()
    done = queue.get(legacy.id)
    assert ran and done.status == "failed" and done.output[-1] == LEGACY


def test_a_worker_runs_the_spec_s_use_case_and_reports_it(
    database_url: str, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    """An import job runs `service.jobs.run` in a child process: the scenes arrive in SQL,
    its output says so, a second import finds them there, and an archive that is not one
    fails the job with one `error:` line and exit status 1."""
    engine = make_engine(database_url)
    upgrade(engine)
    queue = JobQueue(engine)
    worker = Worker(queue, {"GRN_DATABASE_URL": database_url}, name="test")
    first = queue.submit(ImportJob(archive=ucm_root, labels=ucm_subset), exclusive=False)
    again = queue.submit(ImportJob(archive=ucm_root, labels=ucm_subset), exclusive=False)
    missing = queue.submit(ImportJob(archive=tmp_path / "nowhere"), exclusive=False)
    assert worker.run_one() and worker.run_one() and worker.run_one()
    first, again, missing = (queue.get(job.id) for job in (first, again, missing))
    assert first.status == "succeeded" and first.returncode == 0, first.output
    assert any(line.startswith("imported 126 scenes (0 already") for line in first.output)
    assert again.status == "succeeded", again.output
    assert any("imported 0 scenes (126 already present" in line for line in again.output)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM scenes")).scalar_one() == 126
    assert missing.status == "failed" and missing.returncode == 1, missing.output
    errors = [line for line in missing.output if line.startswith("error: ")]
    assert len(errors) == 1 and "nowhere" in errors[0], missing.output
    engine.dispose()
