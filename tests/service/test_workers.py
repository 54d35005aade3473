"""`grn serve --workers 2` as an operator runs it (service/api/workers.py): each process listens on
the port with its own socket, the kernel spreads connections over both, a second service on
the same port is refused, a worker that dies is replaced, SIGTERM stops every process, and
/metrics adds up every worker's counts whichever worker answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from servers import REPO, LiveServer, Served, eventually, prepared_database, server_env

from service.api.workers import METRICS_DIRECTORY, shared_metrics


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def tcp_sockets(port: int) -> dict[str, str]:
    """inode -> state ('0A' listening, '01' established) of the sockets on local `port`."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            found[fields[9]] = fields[3]
    return found


def per_worker(server: LiveServer, state: str) -> dict[int, int]:
    """Sockets of `state` on the server's port held by each of its workers."""
    sockets = tcp_sockets(server.port)
    workers = [p for p in children(server.process.pid) if socket_inodes(p) & set(sockets)]
    return {p: sum(sockets[i] == state for i in socket_inodes(p) & set(sockets)) for p in workers}


def test_two_workers_share_the_port_and_the_connections(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_subset)
    env = server_env(served, url, tmp_path, GRN_WORKERS="2")
    with LiveServer(env, tmp_path / "server.log") as server:
        listening = per_worker(server, "0A")
        assert len(listening) == 2 and set(listening.values()) == {1}, listening
        clients = [httpx.Client(base_url=server.url, timeout=30) for _ in range(32)]
        try:
            for client in clients:  # 32 keep-alive connections, each answered
                assert client.get("/healthz").status_code == 200
            spread = per_worker(server, "01")
        finally:
            for client in clients:
                client.close()
        assert sum(spread.values()) == 32 and min(spread.values()) >= 4, spread

        second = subprocess.run(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(server.port),
             "--workers", "2"],
            cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1
        assert "Address already in use" in second.stderr

        victim = next(iter(listening))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = per_worker(server, "0A")
            if len(now) == 2 and victim not in now:
                break
            time.sleep(0.5)
        assert len(now) == 2 and victim not in now, now
        assert httpx.get(f"{server.url}/readyz", timeout=30).status_code == 200
        everyone = children(server.process.pid)
    assert server.process.returncode == 0  # stopped by SIGTERM, cleanly
    # the workers' own children (if any) may take a moment to go after them
    eventually(
        lambda: not [p for p in everyone if Path(f"/proc/{p}").exists()], "no orphaned processes"
    )


def scraped(url: str, sample: str) -> float | None:
    """The value of `sample` (name and labels as exposed) in one scrape of /metrics, on a
    connection of its own (so the kernel may hand it to either worker)."""
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_add_up_every_worker(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_subset)
    scratch = tmp_path / "tmp"  # where the supervisor makes its metrics folder
    scratch.mkdir()
    env = server_env(served, url, tmp_path, GRN_WORKERS="2", TMPDIR=str(scratch))
    requests = 'grn_http_requests_total{method="GET",route="/healthz",status="200"}'
    timed = 'grn_http_request_duration_seconds_count{method="GET",route="/healthz"}'
    with LiveServer(env, tmp_path / "server.log") as server:
        for _ in range(40):  # a connection each: the kernel spreads them over both workers
            assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200
        assert len(per_worker(server, "0A")) == 2
        for _ in range(10):  # whichever worker answers, it counts all 40
            assert scraped(server.url, requests) == 40
            assert scraped(server.url, timed) == 40
            assert scraped(server.url, "grn_index_vectors") == 126
            assert scraped(server.url, "grn_searches_in_flight") == 0

        (folder,) = scratch.glob("grn-metrics-*")
        victim = next(iter(per_worker(server, "0A")))
        assert (folder / f"gauge_livesum_{victim}.db").exists()
        os.kill(victim, signal.SIGKILL)
        eventually(
            lambda: len(per_worker(server, "0A")) == 2 and victim not in per_worker(server, "0A"),
            "a worker in the killed one's place",
            timeout=120,
        )
        # the dead worker's requests stay counted; its gauges of the moment are dropped
        assert not (folder / f"gauge_livesum_{victim}.db").exists()
        for _ in range(4):
            assert scraped(server.url, requests) == 40
    assert server.process.returncode == 0
    assert not folder.exists()  # a folder the supervisor made is removed at exit


def test_the_metrics_folder_is_fresh_each_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(METRICS_DIRECTORY, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with shared_metrics(1) as folder:  # one worker: metrics stay in the process
        assert folder is None and METRICS_DIRECTORY not in os.environ
    with shared_metrics(2) as folder:
        assert folder is not None and folder.parent == tmp_path
        assert os.environ[METRICS_DIRECTORY] == str(folder)
    assert not folder.exists() and METRICS_DIRECTORY not in os.environ

    given = tmp_path / "given"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"an earlier run's counts")
    (given / "notes.txt").write_text("not prometheus_client's")
    monkeypatch.setenv(METRICS_DIRECTORY, str(given))
    with shared_metrics(1) as folder:  # given: used even with one worker, emptied first
        assert folder == given and not list(given.glob("*.db"))
    assert given.exists() and (given / "notes.txt").exists()
    assert os.environ[METRICS_DIRECTORY] == str(given)
