"""The worker of the durable admin jobs (`service.jobs.queue`): it claims a job, runs its spec
(`service.jobs.specs`) as a child `grn` process with the service's settings, writes a
heartbeat with the output and progress every second, stops the child when the job is
cancelled or taken back, and gives the job back when the worker itself is stopping."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from service.jobs.progress import parse_progress
from service.jobs.queue import LEASE_SECONDS, OUTPUT_LINES, Job, JobQueue
from service.jobs.specs import LEGACY, spec_to_json

HEARTBEAT_SECONDS = 1.0
REPO_ROOT = Path(__file__).resolve().parents[2]

log = logging.getLogger("grn.jobs")


def worker_name(tag: str = "") -> str:
    return f"{socket.gethostname()}:{os.getpid()}" + (f":{tag}" if tag else "")


class Worker:
    """Claims jobs and runs each as a child `grn` process with the given environment."""

    def __init__(
        self,
        queue: JobQueue,
        env: dict[str, str],
        *,
        name: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
        poll_seconds: float = 1.0,
        on_success: Callable[[Job], None] | None = None,
    ) -> None:
        self.queue = queue
        self.env = env
        self.name = name or worker_name()
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.on_success = on_success
        self.stopping = threading.Event()

    def run_forever(self) -> None:
        log.info("worker %s waiting for jobs", self.name)
        while not self.stopping.is_set():
            try:
                if not self.run_one():
                    self.stopping.wait(self.poll_seconds)
            except Exception:  # the database may be down for a while: keep trying
                log.exception("worker %s: a round failed", self.name)
                self.stopping.wait(max(self.poll_seconds, 2.0))

    def run_one(self) -> bool:
        """Take back lost jobs, then run one queued job; returns whether one ran."""
        for job_id in self.queue.reap(self.lease_seconds):
            log.warning("job %d lost its worker: taken back", job_id)
        job = self.queue.claim(self.name)
        if job is None:
            return False
        log.info("job %d (%s) started: %s", job.id, job.kind, job.command)
        status, returncode, output = self._run(job)
        if status == "released":
            self.queue.release(job.id, self.name, output)
            log.info("job %d given back to the queue: this worker is stopping", job.id)
            return True
        if self.queue.finish(job.id, self.name, status, returncode, output):
            log.info("job %d %s (exit %s)", job.id, status, returncode)
            if status == "succeeded" and self.on_success is not None:
                self.on_success(job)
        return True

    def _run(self, job: Job) -> tuple[str, int | None, list[str]]:
        # an earlier attempt's lines stay first (why it ran again)
        output: deque[str] = deque(job.output, maxlen=OUTPUT_LINES)
        progress: list[float | None] = [None]
        if job.spec is None:
            return "failed", None, [*output, LEGACY]
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "service.jobs.run", spec_to_json(job.spec)],
                cwd=REPO_ROOT,
                env={**os.environ, **self.env},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            return "failed", None, [f"could not start: {exc}"]
        reader = threading.Thread(
            target=_read_output, args=(process, output, progress), daemon=True
        )
        reader.start()
        stop_asked_at: float | None = None
        released = False
        while process.poll() is None:
            reader.join(HEARTBEAT_SECONDS)
            stop = self.queue.heartbeat(job.id, self.name, list(output), progress[0])
            if stop is None and stop_asked_at is None:  # taken back: another worker has it
                output.append("taken back from this worker: stopping")
                stop_asked_at = _terminate(process)
            elif stop and stop_asked_at is None:
                output.append("cancelled: stopping")
                stop_asked_at = _terminate(process)
            elif self.stopping.is_set() and stop_asked_at is None:
                released = True
                stop_asked_at = _terminate(process)
            elif stop_asked_at is not None and time.monotonic() - stop_asked_at > 10:
                _kill(process)
        reader.join(5)
        returncode = process.returncode
        if released:
            return "released", returncode, list(output)
        if stop_asked_at is not None:
            return "cancelled", returncode, list(output)
        return ("succeeded" if returncode == 0 else "failed"), returncode, list(output)


def _read_output(
    process: subprocess.Popen[bytes], output: deque[str], progress: list[float | None]
) -> None:
    """Lines of the child's output (split on carriage returns too, should a bar draw),
    its last progress line (`service.jobs.progress`) as progress, not as a line."""
    assert process.stdout is not None
    pending = b""
    while chunk := process.stdout.read1(65536):  # type: ignore[attr-defined]
        pending += chunk
        *parts, pending = re.split(rb"[\r\n]", pending)
        for part in parts:
            _take(part, output, progress)
    _take(pending, output, progress)


def _take(part: bytes, output: deque[str], progress: list[float | None]) -> None:
    report = parse_progress(part)
    if report is not None:
        progress[0] = report.fraction
        return
    line = part.decode(errors="replace").rstrip()
    if line:
        output.append(line)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the worker dies (Linux), so a killed worker leaves no
    command running that a retry would race with."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _terminate(process: subprocess.Popen[bytes]) -> float:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    return time.monotonic()


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
