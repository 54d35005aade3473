"""`/classify` past saturation, with load shedding and without it, in one run.

    make serve-prepare
    python bench/overload.py                 # c = 16 (saturation), then c = 128 (8x)

For each setting (GRN_MAX_MODEL_REQUESTS 32, then 0: no bound, the default) a real server
(`python -m service.cli serve`, one worker, batching on) is started over make run's
database, model and index; N asyncio clients (httpx) send one UCM JPEG each, back to back,
for `--seconds` after `--warmup`; a client refused with 503 sleeps for its Retry-After
before the next request. Printed per cell: answers per second by status, p50 and
p99 of the 200 answers, and the server's resident memory (from /proc) before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from search_latency import serve  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def load(
    url: str, image: bytes, clients: int, seconds: float, warmup: float
) -> dict[str, Any]:
    stop = time.monotonic() + warmup + seconds
    counted_from = time.monotonic() + warmup
    times: list[float] = []
    statuses: dict[str, int] = {}

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            start = time.monotonic()
            try:
                answer = await client.post("/classify", files={"file": ("a.jpg", image)})
                status = str(answer.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            if start >= counted_from and time.monotonic() <= stop:
                statuses[status] = statuses.get(status, 0) + 1
                if status == "200":
                    times.append((time.monotonic() - start) * 1000)
            if status == "503":  # a client that honours Retry-After
                await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    quantiles = statistics.quantiles(times, n=100) if len(times) > 1 else [0.0] * 99
    return {
        "per_s": {k: v / seconds for k, v in sorted(statuses.items())},
        "p50": statistics.median(times) if times else 0.0,
        "p99": quantiles[98],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    ucm = REPO.parent / "shared/datasets/ucm-multilabel/images"
    image = next(ucm.rglob("*.tif"), None) or next(ucm.rglob("*.*"))
    payload = image.read_bytes()
    env = {
        "GRN_DATABASE_URL": f"sqlite:///{REPO / 'data/grn.db'}",
        "GRN_MODEL_PATH": str(REPO / "runs/ucm-head/model.safetensors"),
        "GRN_INDEX_ROOT": str(REPO / "data/index"),
        "GRN_INDEX_POLL_SECONDS": "0",
    }
    print(f"{'bound':>6} {'clients':>7} {'200/s':>7} {'503/s':>7} {'other/s':>8} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'RSS MB before/after':>20}")  # fmt: skip
    for bound in ("32", "0"):
        server, url = serve(REPO, {**env, "GRN_MAX_MODEL_REQUESTS": bound})
        try:
            for clients in args.clients:
                before = rss_mb(server.pid)
                cell = asyncio.run(load(url, payload, clients, args.seconds, args.warmup))
                after = rss_mb(server.pid)
                ok = cell["per_s"].get("200", 0.0)
                shed = cell["per_s"].get("503", 0.0)
                other = sum(v for k, v in cell["per_s"].items() if k not in ("200", "503"))
                rss = f"{before:.0f} / {after:.0f}"
                print(f"{bound:>6} {clients:>7} {ok:>7.1f} {shed:>7.1f} {other:>8.1f} "
                      f"{cell['p50']:>8.0f} {cell['p99']:>8.0f} {rss:>20}")  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
