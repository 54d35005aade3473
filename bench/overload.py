"""`/classify` past saturation, with load shedding and without it, in one run.

    make serve-prepare
    python -m bench.overload                      # wrk (when installed) and the Python client
    python -m bench.overload --clients wrk --ignore-retry-after

For each GRN_MAX_MODEL_REQUESTS setting (`--bounds`; 0: no bound) a real server (`python -m
service.cli serve`, one worker, batching on) is started over make run's database, model and
index, and each client in `--clients` sends one UCM JPEG per request, back to back, from N
connections (c = 16: saturation, then 128: 8x) for `--seconds` after `--warmup`:
  - wrk: a C load generator, cheap beside the server on shared cores (apt-get install wrk);
    bench/wrk/classify.lua stamps each request with its send time and writes each answer's
    status and latency;
  - python: N asyncio httpx clients in this process.
A client answered 503 waits for its Retry-After before the next request (a well-behaved
client) unless --ignore-retry-after. Printed per cell: answers per second by status, p50 and
p99 of the 200 answers, and the server's resident memory (from /proc) before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench._common import REPO, UCM, made_run_env
from bench.server import serve

WRK_SCRIPT = REPO / "bench/wrk/classify.lua"


def summary(answers: list[tuple[str, float]], seconds: float) -> dict[str, Any]:
    """(status, ms) answers -> per-second counts by status, p50 and p99 of the 200s."""
    statuses: dict[str, int] = {}
    for status, _ in answers:
        statuses[status] = statuses.get(status, 0) + 1
    times = sorted(ms for status, ms in answers if status == "200")
    quantiles = statistics.quantiles(times, n=100) if len(times) > 1 else [0.0] * 99
    return {
        "per_s": {k: v / seconds for k, v in sorted(statuses.items())},
        "p50": statistics.median(times) if times else 0.0,
        "p99": quantiles[98],
    }


async def python_load(
    url: str, image: bytes, clients: int, seconds: float, warmup: float, honour: bool
) -> dict[str, Any]:
    stop = time.monotonic() + warmup + seconds
    counted_from = time.monotonic() + warmup
    answers: list[tuple[str, float]] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            start = time.monotonic()
            try:
                answer = await client.post("/classify", files={"file": ("a.jpg", image)})
                status = str(answer.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            if start >= counted_from and time.monotonic() <= stop:
                answers.append((status, (time.monotonic() - start) * 1000))
            if status == "503" and honour:
                await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    return summary(answers, seconds)


def wrk_load(
    url: str, image: Path, clients: int, seconds: float, warmup: float, honour: bool
) -> dict[str, Any]:
    env = {**os.environ, "GRN_IMAGE": str(image), "GRN_RETRY_AFTER": "1" if honour else "0"}

    def run(duration: float, latencies: str) -> None:
        subprocess.run(
            ["wrk", "-t1", f"-c{clients}", f"-d{duration:.0f}s", "--timeout", "60s",
             "-s", str(WRK_SCRIPT), url],
            env={**env, "GRN_LATENCIES": latencies}, capture_output=True, check=True,
        )  # fmt: skip

    run(max(warmup, 1), "")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "latencies.txt"
        run(seconds, str(path))
        rows = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
    return summary([(status, float(ms)) for status, ms in rows], seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 128])
    clients = ["wrk", "python"] if shutil.which("wrk") else ["python"]
    parser.add_argument("--clients", nargs="+", choices=["wrk", "python"], default=clients)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--bounds", nargs="+", default=["16", "32", "0"],
        help="GRN_MAX_MODEL_REQUESTS settings to compare (0: no bound)",
    )  # fmt: skip
    parser.add_argument("--ignore-retry-after", action="store_true")
    args = parser.parse_args()
    if "wrk" in args.clients and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    ucm = UCM / "images"
    image = next(ucm.rglob("*.jpg"), None) or next(ucm.rglob("*.*"))
    payload = image.read_bytes()
    honour = not args.ignore_retry_after
    env = made_run_env()
    print(f"Retry-After honoured: {honour}; {args.seconds:.0f} s per cell")
    print(f"{'client':>7} {'bound':>6} {'conns':>6} {'200/s':>7} {'503/s':>7} {'other/s':>8} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'RSS MB before/after':>20}")  # fmt: skip
    for bound in args.bounds:
        with serve({**env, "GRN_MAX_MODEL_REQUESTS": bound}) as server:
            url = server.url
            for client in args.clients:
                for connections in args.connections:
                    before = server.rss_kib() / 1024
                    if client == "wrk":
                        cell = wrk_load(url, image, connections, args.seconds, args.warmup, honour)
                    else:
                        cell = asyncio.run(
                            python_load(
                                url, payload, connections, args.seconds, args.warmup, honour
                            )
                        )
                    after = server.rss_kib() / 1024
                    ok = cell["per_s"].get("200", 0.0)
                    shed = cell["per_s"].get("503", 0.0)
                    other = sum(v for k, v in cell["per_s"].items() if k not in ("200", "503"))
                    rss = f"{before:.0f} / {after:.0f}"
                    print(f"{client:>7} {bound:>6} {connections:>6} {ok:>7.1f} {shed:>7.1f} "
                          f"{other:>8.1f} {cell['p50']:>8.0f} {cell['p99']:>8.0f} {rss:>20}",
                          flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
