"""Faults while the service runs: reindex jobs SIGKILLed at random points, a disk that fills
while an index is written, and PostgreSQL stopped and started again under the service."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import (
    REPO,
    LiveServer,
    Served,
    Traffic,
    free_port,
    polling_server_under_traffic,
    prepared_database,
    server_env,
)

from index.stores.faiss_versions import IndexStore
from model.archive import load_archive, scene_id

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


class Faulty:
    """A server that polls its index every 0.2 s, under traffic, over its own copy of the
    model and index, which `grn reindex` rebuilds beside it (each run keeps every version,
    so the test can read the manifest of each one served)."""

    def __init__(
        self, running: tuple[LiveServer, Served, Traffic], ucm_root: Path, labels: Path
    ) -> None:
        self.server, self.mine, self.traffic = running
        self.store = IndexStore(self.mine.index_root)
        self.ucm_root, self.labels = ucm_root, labels

    def reindex(
        self, file_size_limit: int | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen:  # type: ignore[type-arg]
        """`grn reindex` of the copy started in a subprocess (in `env` if given), whose files
        may grow to at most `file_size_limit` bytes. The limit is set by the child's own Python
        before it execs the job, not by a preexec_fn: forking this test process with Python
        code still to run in the child aborts it where an earlier test left gRPC's threads
        here (Ray, Milvus)."""
        limited = (
            []
            if file_size_limit is None
            else [
                sys.executable,
                "-c",
                "import os, resource, sys; n = int(sys.argv[1]);"
                " resource.setrlimit(resource.RLIMIT_FSIZE, (n, n));"
                " os.execv(sys.argv[2], sys.argv[2:])",
                str(file_size_limit),
            ]
        )
        return subprocess.Popen(
            [
                *limited,
                sys.executable,
                "-m",
                "service.cli",
                "reindex",
                "--model",
                str(self.mine.model),
                "--archive",
                str(self.ucm_root),
                "--labels",
                str(self.labels),
                "--index-root",
                str(self.mine.index_root),
                "--factory",
                "Flat",
                "--shard-size",
                "32",
                "--keep",
                "20",
                "--quiet",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )


@pytest.fixture
def faulty(served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path) -> Iterator[Faulty]:
    with polling_server_under_traffic(served, ucm_root, ucm_subset, tmp_path) as running:
        yield Faulty(running, ucm_root, ucm_subset)


def test_reindex_killed_at_random_points(faulty: Faulty) -> None:
    store = faulty.store
    first = store.current_version()
    rng = random.Random(7)
    kills = []
    for run in range(4):
        job = faulty.reindex()
        delay = rng.uniform(1.0, 8.0)
        try:
            job.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            job.send_signal(signal.SIGKILL)
            job.wait()
        kills.append((run, round(delay, 2), job.returncode))
        time.sleep(0.5)
        assert httpx.get(faulty.server.url + "/readyz").status_code == 200
    # at named points too: after the index file, before and after the manifest
    for point in ("embed-shard:1", "index-written", "manifest-written"):
        # shards a killed run finished are reused: start from none so shard 1 is computed
        shutil.rmtree(faulty.mine.index_root / "work", ignore_errors=True)
        job = faulty.reindex(env={**os.environ, "GRN_FAULT_KILL_AT": point})
        assert job.wait(timeout=120) == -signal.SIGKILL, point
        kills.append((point, None, job.returncode))
    final = faulty.reindex()
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    newest = store.current_version()
    assert newest != first
    faulty.traffic.wait_for(
        lambda answer: answer.kind == "search" and answer.index_version == newest,
        f"from the newest index {newest}",
    )
    # every request succeeded, each search from a complete index version
    failed = [answer for answer in faulty.traffic.seen if answer.status != 200]
    assert not failed, (failed[:5], kills)
    versions = {answer.index_version for answer in faulty.traffic.seen if answer.kind == "search"}
    assert first in versions and newest in versions
    for version in versions:
        assert version is not None and store.manifest(version).count == 126


def test_disk_full_while_writing_an_index(faulty: Faulty) -> None:
    store = faulty.store
    before = store.current_version()
    job = faulty.reindex(file_size_limit=40 * 1024)  # the 18 kB shards fit, the 64 kB index not
    _, err = job.communicate(timeout=300)
    assert job.returncode == 1, err
    assert "could not be written" in err and "unchanged" in err and "Traceback" not in err
    assert store.current_version() == before
    store.load()  # the version in service still loads and verifies
    assert httpx.get(faulty.server.url + "/readyz").json()["index_version"] == before
    retry = faulty.reindex()
    assert retry.wait(timeout=300) == 0
    assert store.current_version() != before
    assert all(answer.status == 200 for answer in faulty.traffic.seen)


class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in a temporary folder, its own port),
    run as the `postgres` user, so stopping it never touches the shared server."""

    def __init__(self) -> None:
        assert PG_BIN is not None
        # not under pytest's folders: they are private to root, and the server runs as postgres
        root = Path(tempfile.mkdtemp(prefix="grn-pg-"))
        self.root = root
        self.data = root / "pgdata"
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        shutil.chown(root, "postgres", "postgres")
        self._as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "grn"]
        )

    def _as_postgres(self, command: list[str]) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(prefix + command, check=True, capture_output=True, cwd=self.root)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://grn@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-w",
                "-l",
                str(self.root / "log"),
                "start",
            ]
        )

    def stop(self) -> None:
        self._as_postgres(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
        )

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.mark.skipif(
    PG_BIN is None or shutil.which("runuser") is None, reason="needs PostgreSQL's binaries"
)
def test_postgres_stopped_and_started_under_the_service(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    postgres = PrivatePostgres()
    postgres.start()
    server = None
    try:
        prepared_database(postgres.url, ucm_root, ucm_subset)
        server = LiveServer(server_env(served, postgres.url, tmp_path), tmp_path / "server.log")
        server.wait_ready()
        subset = load_archive(ucm_root, ucm_subset)
        image = subset.scenes[2].path.read_bytes()
        query = {"scene_id": scene_id(subset.scenes[3].name), "k": 5}
        with server.client() as client:
            assert client.post("/search", json=query).status_code == 200

            postgres.stop()
            ready = client.get("/readyz")
            assert ready.status_code == 503 and "database" in ready.json()["message"]
            classified = client.post("/classify", files={"file": ("a.jpg", image)})
            assert classified.status_code == 200  # the model needs no database
            searched = client.post("/search", json=query)
            assert searched.status_code == 503
            assert searched.json()["error"] == "database_unavailable"
            assert "database" in searched.json()["message"]
            assert client.get("/scenes").status_code == 503
            metrics = client.get("/metrics").text
            assert "grn_database_errors_total 0.0" not in metrics

            postgres.start()
            deadline = time.monotonic() + 30
            while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.3)
            assert client.get("/readyz").status_code == 200  # recovered without a restart
            assert client.post("/search", json=query).status_code == 200
            assert client.get("/scenes").status_code == 200
    finally:
        if server is not None:
            server.stop()
        postgres.stop()
        postgres.remove()
