"""What regions and match maps cost a search (`service.usecases.regions`), through a real
server.

    make serve-prepare
    python -m bench.regions_cost [--rounds 15] [--out docs/results/regions-cost.json]

`POST /search` by upload (UCM scenes, k = 10, one request at a time, the uploads taken in
turn) as the page and the API send it: the whole image (the baseline), a region (its
top-left quarter: one image through the network either way), with `match_maps` (a map
for each of the 10 hits: 10 x 16 windows through the network at the default 4 x 4), and
`POST /match` for one hit (16 windows, as the page's viewer asks). Medians and p90 of
`--rounds` requests after a warm-up, interleaved round by round; the load average beside
them. `--model`, `--index-root` and `--database-url` serve another set-up than `make run`'s.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench._common import (
    DATABASE,
    INDEX_ROOT,
    MODEL,
    UCM,
    invocation,
    percentiles,
    print_closing,
    save_report,
)
from bench.server import serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--index-root", type=Path, default=INDEX_ROOT)
    parser.add_argument("--database-url", default=f"sqlite:///{DATABASE}")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    env = {
        "GRN_DATABASE_URL": args.database_url,
        "GRN_MODEL_PATH": str(args.model),
        "GRN_INDEX_ROOT": str(args.index_root),
        "GRN_INDEX_POLL_SECONDS": "0",
    }
    images = sorted(path for path in (UCM / "images").rglob("*") if path.is_file())
    files = images[:: max(1, len(images) // args.rounds)][: args.rounds]
    report: dict[str, Any] = {"command": invocation(), "rounds": args.rounds, "cases": {}}
    with serve(env) as server, httpx.Client(base_url=server.url, timeout=300) as client:
        hit = client.post("/search", json={"labels_all": ["trees"], "k": 1}).json()["hits"][0]
        cases: dict[str, Callable[[Path], httpx.Response]] = {
            "whole image (baseline)": lambda f: _upload(client, "/search", f, k=10),
            "region": lambda f: _upload(client, "/search", f, k=10, region="0,0,128,128"),
            "region + match_maps, 10 hits, 4x4": lambda f: _upload(
                client, "/search", f, k=10, region="0,0,128,128", match_maps="true"
            ),
            "POST /match, one hit, 4x4": lambda f: _upload(
                client, "/match", f, hit_id=hit["id"], region="0,0,128,128"
            ),
        }
        for case in cases.values():  # warm-up: the first request of each kind
            _checked(case(files[0]))
        times: dict[str, list[float]] = {name: [] for name in cases}
        for path in files:
            for name, case in cases.items():
                started = time.perf_counter()
                _checked(case(path))
                times[name].append((time.perf_counter() - started) * 1000)
    for name, measured in times.items():
        report["cases"][name] = percentiles(measured, upper=(90,))
        row = report["cases"][name]
        print(f"{name:38s} p50 {row['p50_ms']:8.1f} ms   p90 {row['p90_ms']:8.1f} ms")
    report["load_average"] = [round(value, 2) for value in os.getloadavg()]
    save_report(report, args.out)
    print_closing(report)


def _upload(client: httpx.Client, path: str, image: Path, **fields: Any) -> httpx.Response:
    return client.post(path, files={"file": (image.name, image.read_bytes())}, data=fields)


def _checked(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise SystemExit(f"{response.request.url}: {response.status_code} {response.text}")


if __name__ == "__main__":
    main()
