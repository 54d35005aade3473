"""`POST /search` by scene id through a real server, this tree against a baseline tree, in one
run: k = 10, k = 1000, and k = 10 with a label filter, one request at a time.

    git worktree add /tmp/grn-baseline <commit>
    python -m bench.search_latency --baseline /tmp/grn-baseline \
        [--baseline-revision 0001_initial_schema]     # if the baseline's schema is older

Both trees serve the same database (copies of `--database-url`'s SQLite file), model and
index (`make serve-prepare`'s) with this interpreter and packages, one after the other and
twice each (A B A B), so a drift of the machine shows rather than favours one. Each server
(`python -m service.cli serve`, one worker, index polling off) is warmed up with 50 requests;
then `--requests` requests per case are timed from this process (httpx, keep-alive). Printed:
p50 and p90 in ms per tree and case, and the baseline's p50 over ours.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench._common import INDEX_ROOT, MODEL, REPO
from bench.server import scene_ids, serve

CASES: dict[str, dict[str, Any]] = {
    "k = 10": {"k": 10},
    "k = 1000": {"k": 1000},
    "k = 10, labels_any water/sea": {"k": 10, "labels_any": ["water", "sea"]},
}


def measure(url: str, requests: int) -> dict[str, list[float]]:
    with httpx.Client(base_url=url, timeout=30) as client:
        ids = scene_ids(url, limit=200)
        for n in range(50):
            client.post("/search", json={"scene_id": ids[n % len(ids)], "k": 10})
        times: dict[str, list[float]] = {}
        for case, body in CASES.items():
            got = []
            for n in range(requests):
                start = time.perf_counter()
                response = client.post("/search", json={**body, "scene_id": ids[n % len(ids)]})
                got.append((time.perf_counter() - start) * 1000)
                response.raise_for_status()
            times[case] = got
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout to compare")
    parser.add_argument("--database-url", default="sqlite:///data/grn.db")
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--index-root", type=Path, default=INDEX_ROOT)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--baseline-revision", help="migrate the baseline's copy of the database down to this"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        databases = {}
        for name in ("baseline", "ours"):
            databases[name] = Path(work) / f"{name}.db"
            shutil.copy(args.database_url.removeprefix("sqlite:///"), databases[name])
        if args.baseline_revision:
            from service.storage.db import make_engine
            from service.storage.migrate import downgrade

            engine = make_engine(f"sqlite:///{databases['baseline']}")
            downgrade(engine, args.baseline_revision)
            engine.dispose()
        env = {
            "GRN_MODEL_PATH": str(args.model.resolve()),
            "GRN_INDEX_ROOT": str(args.index_root.resolve()),
            "GRN_THUMBNAIL_DIR": str(Path(work) / "thumbnails"),
            "GRN_INDEX_POLL_SECONDS": "0",
        }
        results: dict[str, dict[str, list[float]]] = {"baseline": {}, "ours": {}}
        for _ in range(2):
            for name, tree in (("baseline", args.baseline.resolve()), ("ours", REPO)):
                database = f"sqlite:///{databases[name]}"
                with serve({**env, "GRN_DATABASE_URL": database}, tree=tree) as server:
                    for case, times in measure(server.url, args.requests).items():
                        results[name].setdefault(case, []).extend(times)
    print(f"{'case':<32} {'baseline p50':>12} {'p90':>7} {'ours p50':>9} {'p90':>7} {'x':>6}")
    for case in CASES:
        base, ours = results["baseline"][case], results["ours"][case]
        b50, o50 = statistics.median(base), statistics.median(ours)
        b90 = statistics.quantiles(base, n=10)[-1]
        o90 = statistics.quantiles(ours, n=10)[-1]
        print(f"{case:<32} {b50:>12.2f} {b90:>7.2f} {o50:>9.2f} {o90:>7.2f} {b50 / o50:>6.2f}")


if __name__ == "__main__":
    main()
