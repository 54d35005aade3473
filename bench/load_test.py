"""Load test: 32 concurrent clients for 60 s against a real server over the 2100-scene UCM
archive, mixing /classify, /search by image, /search by scene id and /scenes.

    python -m bench.load_test --out docs/results/load-test.json

(after `make serve-prepare`). Each client picks its next request at random from the mix
(weights `--mix`), back to back. Reported: every failure (any answer but 200, any transport
error), requests/s and p50/p99 latency per kind and over all, and the server's resident
memory (VmRSS from /proc) after a warm-up of `--warmup` seconds at the same load and after
the run. The run passes when nothing failed and the resident memory after the run is within
10% of its level after the warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench._common import UCM, invocation
from bench.server import load_client, scene_ids, serve
from bench.service_bench import load_images, server_env

KINDS = ("classify", "search_image", "search_id", "scenes")


async def run_load(
    base_url: str,
    images: list[Any],
    scene_ids: list[int],
    clients: int,
    seconds: float,
    weights: list[float],
    seed: int,
) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
    failures: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
    async with load_client(base_url, clients) as client:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds

        async def send(kind: str, rng: random.Random) -> httpx.Response:
            image = images[rng.randrange(len(images))]
            upload = {"file": (image.name, image.data, "image/jpeg")}
            if kind == "classify":
                return await client.post("/classify", files=upload)
            if kind == "search_image":
                return await client.post("/search", files=upload, data={"k": "10"})
            if kind == "search_id":
                scene = scene_ids[rng.randrange(len(scene_ids))]
                return await client.post("/search", json={"scene_id": scene, "k": 10})
            return await client.get("/scenes", params={"offset": rng.randrange(2000), "limit": 50})

        async def worker(number: int) -> None:
            rng = random.Random(seed * 1000 + number)
            while loop.time() < end:
                kind = rng.choices(KINDS, weights)[0]
                start = loop.time()
                try:
                    response = await send(kind, rng)
                    problem = None if response.status_code == 200 else str(response.status_code)
                except httpx.HTTPError as exc:
                    problem = type(exc).__name__
                if problem is None:
                    latencies[kind].append((loop.time() - start) * 1000)
                else:
                    failures[kind][problem] = failures[kind].get(problem, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        elapsed = time.perf_counter() - started

    def summary(values: list[float]) -> dict[str, Any]:
        return {
            "requests": len(values),
            "requests_per_s": round(len(values) / elapsed, 2),
            "p50_ms": round(float(np.percentile(values, 50)), 1) if values else None,
            "p99_ms": round(float(np.percentile(values, 99)), 1) if values else None,
        }

    everything = [v for kind in KINDS for v in latencies[kind]]
    return {
        "seconds": round(elapsed, 1),
        "by_kind": {
            kind: {**summary(latencies[kind]), "failures": failures[kind]} for kind in KINDS
        },
        "all": {**summary(everything), "failures": sum(sum(f.values()) for f in failures.values())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archive", type=Path, default=UCM)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument(
        "--mix",
        type=float,
        nargs=4,
        default=[1, 1, 1, 1],
        metavar="W",
        help="Weights of classify, search_image, search_id, scenes.",
    )
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--database-url", default="sqlite:///data/grn.db")
    parser.add_argument("--model", type=Path, default=Path("runs/ucm-head/model.safetensors"))
    parser.add_argument("--index-root", type=Path, default=Path("data/index"))
    parser.add_argument("--max-batch-size", type=int, default=4)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/results/load-test.json"))
    args = parser.parse_args()

    images = load_images(args.archive, args.images)
    with serve(server_env(args, batching=True), port=args.port) as server:
        base_url, ids = server.url, scene_ids(server.url)
        print(f"warm-up: {args.clients} clients for {args.warmup:.0f} s", flush=True)
        warm = asyncio.run(
            run_load(base_url, images, ids, args.clients, args.warmup, args.mix, seed=1)
        )
        rss_warm = server.rss_kib()
        print(f"run: {args.clients} clients for {args.seconds:.0f} s", flush=True)
        run = asyncio.run(
            run_load(base_url, images, ids, args.clients, args.seconds, args.mix, seed=2)
        )
        rss_after = server.rss_kib()
        with httpx.Client(base_url=base_url) as client:
            still_ready = client.get("/readyz").status_code == 200
    growth = rss_after / rss_warm - 1
    passed = run["all"]["failures"] == 0 and warm["all"]["failures"] == 0 and growth <= 0.10
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "command": invocation(),
        "clients": args.clients,
        "mix": dict(zip(KINDS, args.mix, strict=True)),
        "server": server.ready,
        "warmup": warm,
        "run": run,
        "rss_mib_after_warmup": round(rss_warm / 1024, 1),
        "rss_mib_after_run": round(rss_after / 1024, 1),
        "rss_growth": round(growth, 4),
        "ready_after": still_ready,
        "passed": passed,
    }
    print("| kind | requests/s | p50 ms | p99 ms | failures |")
    print("| --- | ---: | ---: | ---: | --- |")
    for kind, row in [*run["by_kind"].items(), ("all", run["all"])]:
        cells = [row["requests_per_s"], row["p50_ms"], row["p99_ms"], row["failures"]]
        print(f"| {kind} | " + " | ".join(str(c) for c in cells) + " |")
    print(
        f"server RSS {result['rss_mib_after_warmup']} MiB after warm-up, "
        f"{result['rss_mib_after_run']} MiB after the run ({growth:+.1%}); "
        f"{'PASSED' if passed else 'FAILED'}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if not passed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
