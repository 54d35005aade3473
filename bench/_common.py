"""What several benchmarks share: where things are, the `grn` command as a child process of
this interpreter, and how times are summarised."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
UCM = REPO.parent / "shared/datasets/ucm-multilabel"
"""The UCM multi-label archive beside the repository (../shared/datasets)."""
MODEL = REPO / "runs/ucm-head/model.safetensors"
DATABASE = REPO / "data/grn.db"
INDEX_ROOT = REPO / "data/index"
"""MODEL, DATABASE and INDEX_ROOT: what `make serve-prepare` writes and `make run` serves."""

GRN = (sys.executable, "-m", "service.cli")
"""The `grn` command line, run by this interpreter (so with this tree's packages)."""


def child_env(extra: Mapping[str, str] | None = None, tree: Path = REPO) -> dict[str, str]:
    """This process's environment with `extra` on top and `tree` first on PYTHONPATH, so that
    a child `python -m ...` imports that tree's packages wherever it starts."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tree), env.get("PYTHONPATH")) if p)
    return env


def made_run_env() -> dict[str, str]:
    """The settings of a server over `make run`'s database, model and index, index polling
    off (nothing changes them during a benchmark)."""
    return {
        "GRN_DATABASE_URL": f"sqlite:///{DATABASE}",
        "GRN_MODEL_PATH": str(MODEL),
        "GRN_INDEX_ROOT": str(INDEX_ROOT),
        "GRN_INDEX_POLL_SECONDS": "0",
    }


def grn(
    *arguments: str, env: Mapping[str, str] | None = None, tree: Path = REPO
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """`grn ARGUMENTS` of `tree` as a child process (its output captured): the seconds it
    took, interpreter start and imports included, and what it returned."""
    started = time.perf_counter()
    done = subprocess.run(
        [*GRN, *arguments], cwd=tree, env=child_env(env, tree), capture_output=True, text=True
    )
    return time.perf_counter() - started, done


def checked_grn(*arguments: str, env: Mapping[str, str] | None = None) -> tuple[float, str]:
    """As `grn`, exiting with the command's error output when it fails; the seconds and its
    last line of output."""
    seconds, done = grn(*arguments, env=env)
    if done.returncode != 0:
        raise SystemExit(f"grn {' '.join(arguments)}: {done.stderr.strip()}")
    lines = done.stdout.strip().splitlines()
    return seconds, lines[-1] if lines else ""


def percentiles(
    times_ms: Iterable[float], digits: int = 2, upper: tuple[int, ...] = (90, 99)
) -> dict[str, float]:
    """How many, the median and the `upper` percentiles (nearest rank below) of times in
    milliseconds, rounded to `digits`."""
    ordered = sorted(times_ms)
    out: dict[str, float] = {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), digits),
    }
    for q in upper:
        out[f"p{q}_ms"] = round(ordered[int(q / 100 * (len(ordered) - 1))], digits)
    return out


def median_ms(run: Callable[[], Any], repeat: int) -> float:
    """The median of `repeat` timed calls of `run`, in milliseconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def invocation() -> str:
    """This run's command line as typed from the repository root: `python -m bench.NAME ...`."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    module = spec.name if spec is not None else f"bench.{Path(sys.argv[0]).stem}"
    return " ".join(["python", "-m", module, *sys.argv[1:]])


def save_report(report: Mapping[str, Any], out: Path | None) -> None:
    """Write the run's report so far as JSON (after each size, so a cut run keeps them)."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, default=str) + "\n")


def print_closing(report: Mapping[str, Any]) -> None:
    """The run's command and the machine's load at its end, on stderr."""
    load = os.getloadavg()[0]
    print(f"\n{report['command']}; 1-min load average at the end {load:.1f}", file=sys.stderr)


def report_each(
    report: dict[str, Any],
    results: Iterable[dict[str, Any]],
    row: Callable[[dict[str, Any]], str],
    out: Path | None,
) -> None:
    """Each result as it comes: into the report's results, printed as a table row and saved
    (a cut run keeps what it measured); the closing line at the end."""
    for result in results:
        report["results"].append(result)
        print(row(result), flush=True)
        save_report(report, out)
    print_closing(report)


def box_query_arguments(parser: argparse.ArgumentParser, repeats: int) -> None:
    """The options of the benchmarks that time queries by a box over a synthetic region:
    its size, the share of scenes the box keeps, the repeats, the seed and the report."""
    parser.add_argument("--region-km", type=float, default=100.0)
    parser.add_argument("--share", type=float, default=0.01, help="of the scenes the box keeps")
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--sql-repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
