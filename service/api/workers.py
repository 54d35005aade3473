"""Several server processes on one port, each with its own listening socket (SO_REUSEPORT).

uvicorn's `--workers` has its processes accept from one shared socket: a connection goes to
whichever process comes back to `accept` first, and with keep-alive clients one process can
end up holding most of them while the other idles (docs/performance.md, two-worker runs).
Here each worker binds its own socket to the port with SO_REUSEPORT, and the kernel spreads
new connections over the sockets by a hash of their addresses.

The supervisor first checks that nothing listens on the port (a plain bind: two services
started on one port must not silently share it), starts the workers, restarts one that
dies (at most `MAX_RESTARTS` a minute), and stops them all on SIGINT or SIGTERM.

Their metrics are added up through prometheus_client's multiprocess mode (`shared_metrics`
here, the adding up in `service.api.observability`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("grn.workers")

MAX_RESTARTS = 5
"""Restarts a minute past which the supervisor gives up (a worker that cannot start)."""
METRICS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus_client's multiprocess mode keeps each process's values."""


@contextlib.contextmanager
def shared_metrics(workers: int) -> Iterator[Path | None]:
    """With `workers` > 1 (or PROMETHEUS_MULTIPROC_DIR given), the folder the workers write
    their metrics to, for any one of them to add up at /metrics: PROMETHEUS_MULTIPROC_DIR
    is set here, before any worker starts, as prometheus_client reads it when imported.
    A folder given is emptied of earlier runs' files and kept; one made here is removed at
    exit. With one worker and none given: None, and metrics stay in the process."""
    given = os.environ.get(METRICS_DIRECTORY)
    if workers <= 1 and not given:
        yield None
        return
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):  # an earlier run's counts would be added in
            stale.unlink()
    else:
        folder = Path(tempfile.mkdtemp(prefix="grn-metrics-"))
        os.environ[METRICS_DIRECTORY] = str(folder)
    try:
        yield folder
    finally:
        if not given:
            os.environ.pop(METRICS_DIRECTORY, None)
            shutil.rmtree(folder, ignore_errors=True)


def forget_worker(pid: int) -> None:
    """Drop a dead worker's gauges of the moment (requests in flight, queue) from the sums;
    what it counted stays counted."""
    folder = os.environ.get(METRICS_DIRECTORY)
    if folder:
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, folder)


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def check_free(host: str, port: int) -> None:
    """Raise OSError (address in use) when something already listens on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # past connections in TIME_WAIT do not count; a listening socket does
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(host: str, port: int, options: dict[str, Any]) -> None:
    """One server process: its own socket, the app from the factory."""
    import uvicorn

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops it with SIGTERM
    config = uvicorn.Config("service.api.app:create_app", factory=True, **options)
    server = uvicorn.Server(config)
    server.run(sockets=[listening_socket(host, port)])


def supervise(host: str, port: int, workers: int, options: dict[str, Any]) -> int:
    """Run `workers` server processes on host:port until SIGINT or SIGTERM; the exit code."""
    check_free(host, port)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    def start() -> subprocess.Popen[bytes]:
        arguments = [host, str(port), json.dumps(options)]
        return subprocess.Popen([sys.executable, "-m", "service.api.workers", *arguments])

    processes = [start() for _ in range(workers)]
    restarts: list[float] = []
    code = 0
    while not stopping:
        time.sleep(0.2)
        for number, process in enumerate(processes):
            if process.poll() is None or stopping:
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60] + [now]
            if len(restarts) > MAX_RESTARTS:
                log.error("workers keep dying (exit code %s); stopping", process.returncode)
                stopping, code = True, 1
                break
            log.warning("worker %d exited with %s; starting another", number, process.returncode)
            forget_worker(process.pid)
            processes[number] = start()
    for process in processes:
        if process.poll() is None:
            process.terminate()  # SIGTERM: uvicorn finishes its requests, runs the lifespan
    deadline = time.monotonic() + 30
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        forget_worker(process.pid)
    return code


if __name__ == "__main__":  # one worker, started by `supervise`
    _worker(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))
