"""`grn status` and `POST /search` by scene id at one archive size, this tree against a
baseline tree over the same database and index (issue 36's targets that `bench.scale` found
missed at a million scenes: status <= 2 s, filtered p50 <= 20 ms with p99 <= 3x p50,
unfiltered p50 <= 5 ms).

One `grn synth` archive (kept under `--work`), one database and `grn import --bulk` (this
tree's; `--reuse` takes the database and index a `--keep` run left), then:

- `grn status --json` of each tree, alternating, `--status-repeat` times each: seconds (the
  interpreter's start included, as `bench.scale` times it) and whether both trees report
  the same;
- both trees' servers at once and, one request at a time, alternating between them, k=10
  searches by the same scene ids unfiltered and with `bench.scale_truth`'s 1% and 50%
  filters (`bench.filtered_search.answers`: p50/p99, first search, recall@10 against brute
  force, short pages).

    git worktree add --detach /tmp/grn-base BASE    # the tree to compare against
    python -m bench.scale_compare --scenes 1000000 --baseline /tmp/grn-base \\
        --work /work/scratch-scale --out docs/results/scale-compare-1000000.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import MODEL, REPO, checked_grn, grn, invocation, print_closing, save_report
from bench.bulk_import import workspace
from bench.filtered_search import HEADER, TREES, answers, both_trees, line
from bench.scale import archive, service_env
from bench.scale_truth import filters, load_truth


def statuses(env: dict[str, str], trees: dict[str, Path], repeat: int) -> dict[str, Any]:
    """`grn status --json` of each tree, alternating: seconds, and whether the reports agree."""
    seconds: dict[str, list[float]] = {tree: [] for tree in trees}
    reports: dict[str, Any] = {}
    for turn in range(repeat):
        for tree in TREES if turn % 2 else TREES[::-1]:
            took, done = grn("status", "--json", env=env, tree=trees[tree])
            if done.returncode not in (0, 1):  # 1: something is stale, still a report
                raise SystemExit(f"grn status ({tree}): {done.stderr.strip()[-2000:]}")
            seconds[tree].append(round(took, 2))
            reports[tree] = json.loads(done.stdout)
    return {
        **{tree: {"seconds": times, "median_s": float(np.median(times))}
           for tree, times in seconds.items()},
        "same_report": reports["old"] == reports["new"],
        "report": reports["new"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, required=True)
    parser.add_argument("--baseline", type=Path, required=True, help="The tree to compare.")
    parser.add_argument("--database", default="postgresql", choices=["sqlite", "postgresql"])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--work", type=Path, default=Path("/tmp/grn-scale"))
    parser.add_argument("--searches", type=int, default=100, help="Per filter and tree.")
    parser.add_argument("--status-repeat", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="A --keep run's database.")
    parser.add_argument("--keep", action="store_true", help="Leave the database and index.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    folder, _ = archive(args.work, args.scenes, args.model)
    truth = load_truth(folder)
    name = f"grn_scale_compare_{args.database}_{args.scenes}"
    if args.reuse:
        url, drop = database_url(args, name), None
        scratch = args.work / name
    else:
        url, drop, scratch = workspace(args.database, args.postgres, args.work, name)
    env = service_env(url, args.model, scratch) | {"GRN_INDEX_POLL_SECONDS": "0"}
    trees = {"old": args.baseline, "new": REPO}
    report: dict[str, Any] = {"command": invocation(), "cores": os.cpu_count()}
    report |= {"scenes": args.scenes, "database": args.database, "load_before": os.getloadavg()}
    try:
        if not args.reuse:
            checked_grn("db", "upgrade", env=env)
            report["import_s"] = round(checked_grn("import", str(folder), "--bulk", env=env)[0])
        report["status"] = statuses(env, trees, args.status_repeat)
        status = report["status"]
        print(f"grn status s, old {status['old']['seconds']}, new {status['new']['seconds']}, "
              f"same report: {status['same_report']}", flush=True)  # fmt: skip
        save_report(report, args.out)
        rows = np.random.default_rng(0).choice(args.scenes, args.searches + 1, replace=False)
        with both_trees(env, args.baseline, truth, rows, report) as (clients, rss_mib):
            print(HEADER, flush=True)
            report["filters"] = {}
            for label, fields in {"unfiltered": {}, **filters(truth)}.items():
                report["filters"][label] = answers(clients, truth, rows, fields)
                print(line(args.scenes, args.database, label, report["filters"][label]))
                save_report(report, args.out)
            report["rss_mib"] = rss_mib()
    finally:
        if drop is not None and not args.keep:
            drop()
            shutil.rmtree(scratch, ignore_errors=True)
    report["load_after"] = os.getloadavg()
    save_report(report, args.out)
    print_closing(report)


def database_url(args: argparse.Namespace, name: str) -> str:
    """The URL of the database a `--keep` run left."""
    if args.database == "sqlite":
        return f"sqlite:///{args.work / name}.db"
    return f"{args.postgres.rsplit('/', 1)[0]}/{name}"


if __name__ == "__main__":
    main()
