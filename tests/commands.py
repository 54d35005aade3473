"""The `grn` command as a user types it, for the tests: a subprocess run in the repository with
a bare environment (PATH, the repository on PYTHONPATH, HOME inside it), so nothing of the
test process's own settings leaks in."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def grn(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`grn ARGS...`; `env`: variables (GRN_ settings, or a whole environment) over the bare
    one."""
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


def tiny_training(archive: Path, labels: Path, out: Path, epochs: int, *more: str) -> list[str]:
    """`grn train` arguments for the tiny network from scratch on 64-pixel inputs (seconds on
    a CPU) for `epochs` epochs, `more` arguments added."""
    return [
        "train",
        "--archive",
        str(archive),
        "--labels",
        str(labels),
        "--out",
        str(out),
        "--mode",
        "full",
        "--backbone",
        "tiny",
        "--no-pretrained",
        "--epochs",
        str(epochs),
        "--batch-size",
        "32",
        "--input-size",
        "64",
        *more,
        "--quiet",
    ]
