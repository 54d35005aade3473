"""Fault injection for crash tests: a process SIGKILLs itself, or holds still, at a named point.

Set `GRN_FAULT_KILL_AT` to a point's name (for example `train-step:7`, `embed-shard:2`,
`index-written`) and the process dies there with SIGKILL, as if the machine had lost power
at that instant. Set `GRN_FAULT_PAUSE_AT` to a point and `GRN_FAULT_PAUSE_FILE` to a path,
and the first process to reach the point creates the file and waits there until the file
says `go`: a test then knows the work is under way, and kills what it likes, without
guessing how long the work takes (later processes pass the point, the file being there).
Unset (always, outside tests), `kill_point` costs two dictionary lookups.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

FAULT_ENV = "GRN_FAULT_KILL_AT"
PAUSE_ENV = "GRN_FAULT_PAUSE_AT"
PAUSE_FILE_ENV = "GRN_FAULT_PAUSE_FILE"


def kill_point(name: str) -> None:
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(PAUSE_ENV) == name:
        _pause(Path(os.environ[PAUSE_FILE_ENV]))


def _pause(marker: Path) -> None:
    try:
        with marker.open("x") as made:  # only the first process to get here waits
            made.write(str(os.getpid()))
    except FileExistsError:
        return
    while marker.read_text() != "go":
        time.sleep(0.05)
