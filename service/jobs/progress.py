"""How a job's child process (`service.jobs.run`) tells its worker (`service.jobs.worker`)
how far it is: one line per report on its output,

    GRN-PROGRESS {"done": 512, "total": 1974, "step": "import"}

a fixed prefix, then a JSON object. The worker reads progress from these lines only, never
from a progress bar's text, so a bar drawn another way (a `TQDM_BAR_FORMAT`, another tqdm)
cannot make a job's progress vanish. The use cases keep their tqdm bars: in the child,
`reporting_progress` has every bar report through these lines instead of drawing itself
(tqdm's own seam for another front end: a bar's `display`), so no use case knows of jobs.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

from tqdm import tqdm

PREFIX = "GRN-PROGRESS "


@dataclass(frozen=True)
class Progress:
    """One report: `done` of `total` units of the step named `step`."""

    done: float
    total: float
    step: str = ""

    @property
    def fraction(self) -> float:
        return min(max(self.done / self.total, 0.0), 1.0)

    def line(self) -> str:
        """The report as a protocol line (no line end)."""
        return PREFIX + json.dumps({"done": self.done, "total": self.total, "step": self.step})


def parse_progress(line: bytes | str) -> Progress | None:
    """The report a protocol line carries; None for any other line, and for a malformed
    protocol line (not JSON, not numbers, no positive total), which the worker then keeps
    as an ordinary output line: seen, never a crash, never a progress."""
    text = line.decode(errors="replace") if isinstance(line, bytes) else line
    if not text.startswith(PREFIX):
        return None
    try:
        fields = json.loads(text[len(PREFIX) :])
    except (ValueError, RecursionError):
        return None
    if not isinstance(fields, dict):
        return None
    done, total, step = (
        _number(fields.get("done")),
        _number(fields.get("total")),
        fields.get("step", ""),
    )
    if done is None or total is None or not isinstance(step, str) or done < 0 or total <= 0:
        return None
    return Progress(done, total, step)


def _number(value: object) -> float | None:
    """`value` as a finite number; None for anything else (a bool included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@contextmanager
def reporting_progress(stream: TextIO | None = None) -> Iterator[None]:
    """Within: every tqdm bar of this process writes a protocol line to `stream` (default
    stdout) each time it would redraw (at its usual pace, `mininterval`) and its state has
    changed, and draws nothing. A bar with no total (or a zero one) reports nothing."""
    out = stream or sys.stdout
    original = tqdm.display
    last: list[Progress | None] = [None]

    def display(bar: tqdm, msg: str | None = None, pos: int | None = None) -> bool:
        if bar.total:
            report = Progress(bar.n, bar.total, bar.desc)
            if report != last[0]:
                last[0] = report
                out.write(report.line() + "\n")  # one write: lines of threads never mix
                out.flush()
        return True

    tqdm.display = display
    try:
        yield
    finally:
        tqdm.display = original
