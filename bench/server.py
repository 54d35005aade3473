"""The one way the benchmarks start a server: `serve()` starts the process, waits until its
readiness URL answers 200 (within a deadline), hands over a `Server`, and stops the process
on the way out, whatever happened.

    with serve({**made_run_env(), "GRN_WORKERS": "2"}) as server:
        httpx.post(f"{server.url}/search", json={"scene_id": 1})

By default the process is this tree's `grn serve` (`python -m service.cli serve --port N`,
this interpreter), on a free port; `tree` serves another checkout with the same interpreter
and packages, and `command` runs any other server (`{port}` in it is replaced). The server's
output goes to a temporary file, printed when it fails to start or dies during the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from bench._common import GRN, REPO, child_env

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 120.0
"""The load generators' timeout per request: long, so that a slow answer counts as slow."""


@dataclass
class Server:
    url: str
    """The base URL, http://127.0.0.1:PORT."""
    process: subprocess.Popen[bytes]
    ready: dict[str, Any] = field(default_factory=dict)
    """The readiness URL's JSON answer ({} when it is not JSON)."""
    startup_s: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        """The server process's resident memory (VmRSS, /proc), in KiB."""
        return rss_kib(self.pid)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    """Resident memory of process `pid` (VmRSS from /proc/PID/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


@contextlib.contextmanager
def serve(
    env: Mapping[str, str] | None = None,
    *,
    tree: Path = REPO,
    command: Sequence[str] | None = None,
    port: int = 0,
    ready_path: str = "/readyz",
    timeout_s: float = READY_TIMEOUT_S,
) -> Iterator[Server]:
    """A running server with `env` on top of this environment, started in `tree` (`tree`
    first on PYTHONPATH), on `port` (0: a free one). Ready when GET `ready_path` answers
    200; SystemExit when the process exits first or `timeout_s` passes. Stopped with
    SIGTERM on the way out (SIGKILL to its process group after STOP_TIMEOUT_S)."""
    port = port or free_port()
    argv = [part.format(port=port) for part in command or [*GRN, "serve", "--port", "{port}"]]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+", prefix="grn-bench-server-") as log:
        process = subprocess.Popen(
            argv,
            cwd=tree,
            env=child_env(env, tree),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only us; we stop it in `finally`
        )
        try:
            started = time.perf_counter()
            ready = _wait_ready(process, url + ready_path, timeout_s, log)
            server = Server(url, process, ready, time.perf_counter() - started)
            print(f"server ready on port {port} in {server.startup_s:.1f} s", file=sys.stderr)
            yield server
            if process.poll() is not None:
                _show(log)
                raise SystemExit(f"the server died during the run (code {process.returncode})")
        finally:
            _stop(process)


def _wait_ready(
    process: subprocess.Popen[bytes], ready_url: str, timeout_s: float, log: TextIO
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                _show(log)
                raise SystemExit(f"the server exited with code {process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                response = client.get(ready_url)
                if response.status_code == 200:
                    try:
                        answer = response.json()
                    except ValueError:
                        return {}
                    return answer if isinstance(answer, dict) else {}
            time.sleep(0.5)
    _show(log)
    raise SystemExit(f"{ready_url} did not answer 200 within {timeout_s:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # its workers too
        process.wait()


def _show(log: TextIO) -> None:
    log.flush()
    log.seek(0)
    print("---- server output ----", file=sys.stderr)
    print(log.read()[-20_000:], file=sys.stderr)
    print("-----------------------", file=sys.stderr)


def scene_ids(url: str, limit: int = 1000) -> list[int]:
    """Ids of the first `limit` scenes of the server's catalog (GET /scenes)."""
    with httpx.Client(base_url=url, timeout=30.0) as client:
        response = client.get("/scenes", params={"limit": limit})
        response.raise_for_status()
        ids = [int(scene["id"]) for scene in response.json()["scenes"]]
    if not ids:
        raise SystemExit("GET /scenes returned no scenes; run `make serve-prepare`")
    return ids


def load_client(url: str, connections: int) -> httpx.AsyncClient:
    """The load generators' client: `connections` concurrent keep-alive connections to `url`,
    REQUEST_TIMEOUT_S per request."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT_S)
