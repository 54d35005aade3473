"""Admin jobs started over HTTP (import, reindex): the same `grn` commands an operator runs,
in a child process, so a crash or a kill of the job never takes the service down and a
killed reindex leaves the index in service untouched. One job of each kind at a time."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT_LINES = 40


class JobConflictError(RuntimeError):
    """A job of the same kind is still running."""


class NoSuchJobError(LookupError):
    """No job with this id in this process."""


@dataclass
class Job:
    id: int
    kind: str
    command: list[str]
    status: str = "running"
    """running, succeeded or failed."""
    returncode: int | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    output: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_LINES))

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "command": " ".join(self.command),
            "status": self.status,
            "returncode": self.returncode,
            "started": self.started,
            "finished": self.finished,
            "output": list(self.output),
        }


class JobRunner:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    def running(self, kind: str) -> Job | None:
        return next(
            (j for j in self.jobs.values() if j.kind == kind and j.status == "running"), None
        )

    def start(
        self,
        kind: str,
        grn_args: Sequence[str],
        env: dict[str, str],
        on_success: Callable[[], Awaitable[None]] | None = None,
    ) -> Job:
        busy = self.running(kind)
        if busy is not None:
            raise JobConflictError(f"{kind} job {busy.id} is still running")
        command = [sys.executable, "-m", "service.cli", *grn_args]
        job = Job(next(self._ids), kind, command)
        self.jobs[job.id] = job
        task = asyncio.get_running_loop().create_task(self._run(job, env, on_success))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _run(
        self, job: Job, env: dict[str, str], on_success: Callable[[], Awaitable[None]] | None
    ) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                *job.command,
                cwd=self.workdir,
                env={**os.environ, **env},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            assert process.stdout is not None
            async for line in process.stdout:
                job.output.append(line.decode(errors="replace").rstrip())
            job.returncode = await process.wait()
        except OSError as exc:
            job.output.append(f"could not start: {exc}")
            job.returncode = -1
        job.status = "succeeded" if job.returncode == 0 else "failed"
        job.finished = time.time()
        if job.status == "succeeded" and on_success is not None:
            await on_success()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
