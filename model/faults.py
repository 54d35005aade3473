"""Fault injection for crash tests: a process SIGKILLs itself at a named point.

Set `GRN_FAULT_KILL_AT` to a point's name (for example `train-step:7`, `embed-shard:2`,
`index-written`) and the process dies there with SIGKILL, as if the machine had lost power
at that instant. Unset (always, outside tests), `kill_point` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "GRN_FAULT_KILL_AT"


def kill_point(name: str) -> None:
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
