"""Durable admin jobs: rows in SQL that `grn worker` processes and the API's embedded workers
claim, on SQLite and PostgreSQL. Every job runs once with several claimers, a killed worker's
job runs again and ends truthfully, and a cancel stops a running job without touching the
index in service."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from servers import REPO, LiveServer, Served, copy_served, prepared_database, server_env
from sqlalchemy import text, update

from index.stores.faiss_versions import IndexStore
from model.faults import PAUSE_ENV, PAUSE_FILE_ENV
from service.jobs.progress import PREFIX, Progress
from service.jobs.queue import Job, JobQueue
from service.jobs.specs import ImportJob, ReindexJob, TrainJob
from service.jobs.worker import _read_output
from service.storage.db import JobRow, make_engine, utcnow
from service.usecases.importer import CHUNK

KEY = "admin-key-0123456789abcdef"


@pytest.fixture
def setup(
    database_url: str, served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> Iterator[tuple[dict[str, str], JobQueue]]:
    prepared_database(database_url, ucm_root, ucm_subset)
    mine = copy_served(served, tmp_path / "served")
    env = server_env(mine, database_url, tmp_path, GRN_API_KEY=KEY, GRN_ARCHIVE_DIR=str(ucm_root))
    engine = make_engine(database_url)
    yield env, JobQueue(engine)
    engine.dispose()


def start_worker(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "worker", *args],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def wait_until(queue: JobQueue, job_id: int, done: tuple[str, ...], timeout: float = 180) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = queue.get(job_id)
        if job.status in done:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is still {queue.get(job_id).status} after {timeout} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_every_job_runs_once_with_two_api_processes_and_two_workers(
    setup: tuple[dict[str, str], JobQueue], ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    env, queue = setup
    spec = ImportJob(archive=ucm_root, labels=ucm_subset)
    jobs = [queue.submit(spec, exclusive=False) for _ in range(6)]
    workers = [start_worker(env, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        api = LiveServer({**env, "GRN_WORKERS": "2"}, tmp_path / "server.log")
        with api:
            finished = [wait_until(queue, job.id, ("succeeded", "failed")) for job in jobs]
            with httpx.Client(base_url=api.url, timeout=30) as client:
                listed = client.get("/admin/jobs", headers={"X-API-Key": KEY}).json()
    finally:
        for worker in workers:
            stop(worker)
    for job in finished:
        assert job.status == "succeeded", job.output
        assert job.attempts == 1, (job.id, job.attempts)  # claimed by one worker, once
        assert any("already" in line for line in job.output), job.output
    assert {j["id"] for j in listed} >= {job.id for job in jobs}
    print("workers that ran jobs:", sorted({job.worker or "" for job in finished}))


@pytest.mark.parametrize("kind", ["reindex", "import", "train"])
def test_a_killed_workers_job_runs_again_and_ends_truthfully(
    kind: str, setup: tuple[dict[str, str], JobQueue], ucm_root: Path, tmp_path: Path
) -> None:
    """SIGKILL of the worker during a reindex, an import (of the whole UCM archive into a
    database holding 126 of its scenes) and a training: another worker takes the job back
    when the lease runs out and runs it again; it ends with its true status, no scene is
    lost or twice in SQL, and `grn reconcile` is clean."""
    env, queue = setup
    store = IndexStore(env["GRN_INDEX_ROOT"])
    before = store.current_version()
    spec = {
        "reindex": ReindexJob(model=Path(env["GRN_MODEL_PATH"])),
        "import": ImportJob(archive=ucm_root),
        "train": TrainJob(epochs=3, out=tmp_path / "retrain"),
    }[kind]
    # the first attempt holds still part way (its first chunk, shard or step done) until the
    # worker is killed, however fast the work is; the second passes the point
    marker = tmp_path / "paused"
    point = {"reindex": "embed-shard:0", "import": "import-chunk:1", "train": "train-step:1"}
    env = {**env, PAUSE_ENV: point[kind], PAUSE_FILE_ENV: str(marker)}
    job = queue.submit(spec)
    first = start_worker(env, tmp_path / "first.log", "--lease-seconds", "3")
    running = wait_until(queue, job.id, ("running", "succeeded", "failed"), timeout=60)
    assert running.status == "running"
    deadline = time.monotonic() + 300
    while not marker.exists() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), (tmp_path / "first.log").read_text()[-2000:]
    first.send_signal(signal.SIGKILL)  # its job's process dies with it
    first.wait()
    assert queue.get(job.id).status == "running"  # nobody knows yet
    second = start_worker(env, tmp_path / "second.log", "--lease-seconds", "3")
    try:
        done = wait_until(queue, job.id, ("succeeded", "failed", "cancelled"), timeout=600)
    finally:
        stop(second)
    assert done.attempts == 2 and any("stopped answering" in line for line in done.output)
    # a retrain the gate refuses ends failed with exit 3 and says why: that is its truth
    refused = done.status == "failed" and done.returncode == 3
    assert done.status == "succeeded" or (kind == "train" and refused), done.output
    engine = make_engine(env["GRN_DATABASE_URL"])
    with engine.connect() as connection:
        names = connection.execute(text("SELECT name FROM scenes")).scalars().all()
    engine.dispose()
    assert len(names) == len(set(names)) == (2100 if kind == "import" else 126)
    if kind == "reindex":
        assert store.current_version() != before
    if kind == "import":  # the index follows SQL again
        reindexed = subprocess.run(
            [sys.executable, "-m", "service.cli", "reindex", "--model", env["GRN_MODEL_PATH"],
             "--catalog", "--incremental", "--quiet"],
            cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
        )  # fmt: skip
        assert reindexed.returncode == 0, reindexed.stderr
    reconcile = subprocess.run(
        [sys.executable, "-m", "service.cli", "reconcile"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert reconcile.returncode == 0 and "the index matches SQL" in reconcile.stdout


def test_the_worker_takes_its_lease_from_the_settings(
    setup: tuple[dict[str, str], JobQueue], ucm_root: Path, ucm_subset: Path
) -> None:
    """`grn worker` as compose runs it, with GRN_JOB_LEASE_SECONDS (the cluster profile's
    short lease): a job whose worker fell silent 10 s ago is left alone under the default
    lease of 30 s, and taken back and run under a lease of 5 s."""
    env, queue = setup
    job = queue.submit(ImportJob(archive=ucm_root, labels=ucm_subset))
    assert queue.claim("lost-host:1") is not None
    with queue.engine.begin() as connection:
        connection.execute(
            update(JobRow)
            .where(JobRow.id == job.id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=10))
        )

    def worker_once(lease: dict[str, str]) -> None:
        run = subprocess.run(
            [sys.executable, "-m", "service.cli", "worker", "--once"],
            cwd=REPO, env={**os.environ, **env, **lease}, capture_output=True, text=True,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]

    worker_once({})
    kept = queue.get(job.id)
    assert kept.status == "running" and kept.worker == "lost-host:1" and kept.attempts == 1
    worker_once({"GRN_JOB_LEASE_SECONDS": "5"})
    done = queue.get(job.id)
    assert done.status == "succeeded" and done.attempts == 2, done.output
    assert done.worker != "lost-host:1"
    assert any("no heartbeat for 5 s" in line for line in done.output), done.output


def test_cancel_stops_a_running_job_and_leaves_the_index(
    setup: tuple[dict[str, str], JobQueue], tmp_path: Path
) -> None:
    env, queue = setup
    store = IndexStore(env["GRN_INDEX_ROOT"])
    before = store.current_version()
    api = LiveServer(env, tmp_path / "server.log")  # its embedded worker runs the job
    with api, httpx.Client(base_url=api.url, timeout=30) as client:
        auth = {"X-API-Key": KEY}
        queued = client.post("/admin/reindex", headers=auth, json={})
        assert queued.status_code == 202, queued.text
        job_id = queued.json()["id"]
        wait_until(queue, job_id, ("running",), timeout=60)
        cancelled = client.post(f"/admin/jobs/{job_id}/cancel", headers=auth)
        assert cancelled.status_code == 200 and cancelled.json()["cancel_requested"]
        done = wait_until(queue, job_id, ("cancelled", "succeeded", "failed"), timeout=60)
        assert done.status == "cancelled", done.output
        assert store.current_version() == before
        # a queued job is cancelled at once; an unknown one is a 404
        later = queue.submit(ImportJob(archive=Path(env["GRN_ARCHIVE_DIR"])))
        assert queue.cancel(later.id).status in ("cancelled", "running")
        assert client.post("/admin/jobs/99999/cancel", headers=auth).status_code == 404


def test_a_running_job_shows_its_progress_however_its_bars_are_drawn(
    setup: tuple[dict[str, str], JobQueue], ucm_root: Path, tmp_path: Path
) -> None:
    """Progress comes from the child's progress lines (`service.jobs.progress`), not from a
    bar's text: with the bars drawn as `import 256/1974 img` (no percentage), an import of
    the 1974 scenes SQL lacks, held after its first chunk, shows that chunk as its progress,
    and no progress line shows in its output."""
    env, queue = setup
    marker = tmp_path / "paused"
    env = {
        **env,
        PAUSE_ENV: "import-chunk:1",
        PAUSE_FILE_ENV: str(marker),
        "TQDM_BAR_FORMAT": "{desc} {n}/{total} {unit}",
        "TQDM_MININTERVAL": "0",  # every step reported: the pause sees the whole chunk
        "TQDM_MINITERS": "1",
    }
    job = queue.submit(ImportJob(archive=ucm_root))
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), (tmp_path / "worker.log").read_text()[-2000:]
        deadline = time.monotonic() + 15  # the next heartbeats carry it (an earlier one
        # may carry a part of the chunk, read before the child's last line)
        expected = pytest.approx(CHUNK / 1974)
        while (running := queue.get(job.id)).progress != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        assert running.status == "running", running.output
        assert running.progress == expected, running.output
        assert not any(line.startswith(PREFIX.strip()) for line in running.output)
        queue.cancel(job.id)
        done = wait_until(queue, job.id, ("cancelled", "succeeded", "failed"), timeout=60)
    finally:
        stop(worker)
    assert done.status == "cancelled", done.output


def test_the_worker_takes_progress_from_well_formed_progress_lines_only() -> None:
    """A child's output read by the worker: its last well-formed progress line is the
    progress (a line ending the output without a newline too); malformed progress lines and
    a bar's percentage are no progress, kept as output lines, and nothing crashes."""
    lines = [
        "starting",
        Progress(1, 4, "embed").line(),
        "GRN-PROGRESS {not json",
        'GRN-PROGRESS {"done": "3", "total": 4}',
        'GRN-PROGRESS {"done": 1, "total": 0}',
        'GRN-PROGRESS {"done": 1, "total": NaN}',
        "GRN-PROGRESS [1, 2]",
        "GRN-PROGRESS",
        "embed:  50%|#####     | 1/2",
        "done",
        Progress(3, 4, "embed").line(),
    ]
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.write(sys.argv[1])", "\n".join(lines)],
        stdout=subprocess.PIPE,
    )
    output: deque[str] = deque()
    progress: list[float | None] = [None]
    _read_output(child, output, progress)
    assert child.wait() == 0
    assert progress == [0.75]
    assert list(output) == [lines[0], *lines[2:-1]]
