"""Summarise training runs (train_summary.json, metrics.jsonl, eval/metrics.json) as JSON.

python -m bench.collect_runs RUN_DIR [RUN_DIR ...] > summary.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def summarise(run: Path) -> dict[str, object]:
    summary = json.loads((run / "train_summary.json").read_text())
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epoch_seconds = [row["train_seconds"] for row in history]
    result: dict[str, object] = {
        "run": run.name,
        "config": summary["config"],
        "device": summary["device"],
        "epochs_run": summary["epochs_run"],
        "best_epoch": summary["best_epoch"],
        "best_val": summary["best_val"],
        "timings": summary["timings"],
        "median_train_seconds_per_epoch": statistics.median(epoch_seconds),
        "median_train_images_per_s": statistics.median(r["train_images_per_s"] for r in history),
    }
    evaluation = run / "eval" / "metrics.json"
    if evaluation.is_file():
        result["test"] = json.loads(evaluation.read_text())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="*", help="run folders (others are skipped)")
    runs = [
        summarise(run) for run in parser.parse_args().runs if (run / "train_summary.json").is_file()
    ]
    json.dump(runs, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
