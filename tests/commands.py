"""The `grn` command as a user types it, for the tests: a subprocess run in the repository with
a bare environment (PATH, the repository on PYTHONPATH, HOME inside it), so nothing of the
test process's own settings leaks in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def grn(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`grn ARGS...`; `env`: variables (GRN_ settings) added to the bare environment."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(REPO / ".cache"),
            **(env or {}),
        },
    )  # fmt: skip
