"""HTTP benchmark of the real service: /classify and /search, batching on and off, with the
bare model as the baseline in the same run.

    python -m bench.service_bench --out docs/results/service-bench.json

(after `make serve-prepare`, which writes the database, the model and the index this reads.)

For each setting of GRN_BATCHING (true, then false) a real server process is started
(`python -m service.cli serve`, one uvicorn worker, index polling off) and waited for until
GET /readyz answers 200. The load comes from this process: N asyncio workers with one
httpx.AsyncClient, each sending requests back to back for `--seconds` after a `--warmup`
that is not counted. Scenarios:
- classify: POST /classify with one UCM JPEG (multipart field `file`);
- search_id: POST /search with JSON {"scene_id": id, "k": 10}, ids from GET /scenes;
- search_image: POST /search with one UCM JPEG and the form field k=10.
Each cell reports requests/s (200 answers completed inside the timed window), p50 and p99
latency of those answers in ms, and every non-200 answer or transport error as a failure.

Baseline, measured before any server starts: the model alone in this process
(`model.card.load_model` on the CPU, channels-last, `torch.inference_mode`, every core) fed
the same images already decoded and resized to the card's input size, at batch 1, 4 and 8
(stacking, normalisation, the network and the sigmoid timed, as in the service's batcher).
After a warm-up pass at every batch size, every batch of `--model-reps` passes is timed;
ms per image is the median batch time over the batch size (robust to a stalled batch on a
shared machine); each pass's images/s and the page faults per image are kept too. It is
measured again after the servers have stopped (`--no-model-recheck` to skip), to show how
the machine drifted during the run.
Derived: /classify throughput at concurrency 32 batched over unbatched; serving overhead
per image at concurrency 1 unbatched, (classify p50 - model ms/image at batch 1) / model
ms/image at batch 1, and the same ratio inside the server, from its /metrics (mean time in
the app per /classify request against its model's mean time per image); /search by scene
id p50 at concurrency 1.

Client and server share the machine's cores: at high concurrency the client's own CPU use
is part of what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from bench._common import REPO, UCM, invocation
from bench.server import load_client, scene_ids, serve
from model.card import ModelCard, load_model
from model.imageio import decode_image
from model.inference import normalize, to_uint8_tensor
from model.network import GRNNet

SCENARIOS = ("classify", "search_id", "search_image")

Send = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


@dataclass
class Image:
    name: str
    data: bytes


@dataclass
class Cell:
    batching: bool
    scenario: str
    concurrency: int
    seconds: float
    ok: int
    failures: int
    failure_kinds: dict[str, int]
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    server_minor_faults_per_request: float | None
    """Page faults the server took per answered request (Linux; allocator behaviour)."""
    server_ms_per_request: float | None = None
    """Mean time inside the app per request of the cell's route (its /metrics histogram):
    everything the server does but reading the socket and parsing the HTTP head."""
    server_model_ms_per_image: float | None = None
    """Mean model time per image in the server (its /metrics), None if it ran no model."""
    server_mean_batch: float | None = None


@dataclass
class ModelRow:
    batch_size: int
    images_per_s: float
    """1000 / ms_per_image."""
    ms_per_image: float
    """Median time of one batch (over every batch of every timed pass) / batch size."""
    batch_ms_p90: float
    pass_images_per_s: list[float]
    """Throughput of each timed pass over all the images (stalls included)."""
    minor_faults_per_image: float
    """Page faults per image in the timed passes: freshly mapped memory is slow to touch."""


# --- inputs ------------------------------------------------------------------------------


def load_images(archive: Path, count: int) -> list[Image]:
    """`count` UCM JPEGs spread evenly over the sorted list of all of them."""
    paths = sorted((archive / "images").glob("*/*.jpg"))
    if len(paths) < count:
        raise SystemExit(f"{archive}/images holds {len(paths)} JPEGs, fewer than {count}")
    step = len(paths) // count
    return [Image(p.name, p.read_bytes()) for p in paths[::step][:count]]


# --- the model alone ---------------------------------------------------------------------


def minor_faults(pid: int | None = None) -> int | None:
    """Minor page faults so far of this process, or of process `pid` (Linux /proc)."""
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[7])


def one_pass(
    net: GRNNet, card: ModelCard, tensors: list[torch.Tensor], batch_size: int
) -> list[float]:
    """Run the images through in batches; the time of each batch in ms."""
    out = []
    for s in range(0, len(tensors), batch_size):
        start = time.perf_counter()
        result = net(normalize(torch.stack(tensors[s : s + batch_size]), card.mean, card.std))
        torch.sigmoid(result.logits)
        out.append((time.perf_counter() - start) * 1000)
    return out


def time_batches(
    net: GRNNet, card: ModelCard, tensors: list[torch.Tensor], batch_size: int, reps: int
) -> ModelRow:
    """`reps` timed passes over `tensors` in batches of `batch_size`."""
    batch_ms: list[float] = []
    passes = []
    faults = minor_faults() or 0
    for _ in range(reps):
        times = one_pass(net, card, tensors, batch_size)
        batch_ms += times
        passes.append(len(tensors) * 1000 / sum(times))
    faults = (minor_faults() or 0) - faults
    ms_per_image = float(np.median(batch_ms)) / batch_size
    return ModelRow(
        batch_size=batch_size,
        images_per_s=round(1000 / ms_per_image, 2),
        ms_per_image=round(ms_per_image, 3),
        batch_ms_p90=round(float(np.percentile(batch_ms, 90)), 2),
        pass_images_per_s=[round(rate, 2) for rate in passes],
        minor_faults_per_image=round(faults / (reps * len(tensors)), 1),
    )


def model_baseline(
    model_path: Path, images: list[Image], batch_sizes: list[int], reps: int
) -> list[ModelRow]:
    torch.set_num_threads(os.cpu_count() or 1)
    net, card = load_model(model_path, "cpu")
    net = net.to(memory_format=torch.channels_last)
    tensors = [to_uint8_tensor(decode_image(i.data, i.name), card.input_size) for i in images]
    rows = []
    with torch.inference_mode():
        for batch_size in batch_sizes:  # warm-up: every batch size once, then time them
            one_pass(net, card, tensors, batch_size)
        for batch_size in batch_sizes:
            row = time_batches(net, card, tensors, batch_size, reps)
            rows.append(row)
            print(
                f"model alone, batch {batch_size}: {row.images_per_s:.1f} images/s, "
                f"{row.ms_per_image:.2f} ms/image (batch p90 {row.batch_ms_p90} ms; "
                f"per pass {row.pass_images_per_s} images/s; "
                f"{row.minor_faults_per_image} page faults/image)",
                flush=True,
            )
    return rows


# --- the server --------------------------------------------------------------------------


def server_env(args: argparse.Namespace, batching: bool) -> dict[str, str]:
    """The settings of the measured server (`--database-url`, `--model`, ... and batching)."""
    return {
        "GRN_DATABASE_URL": args.database_url,
        "GRN_MODEL_PATH": str(args.model),
        "GRN_INDEX_ROOT": str(args.index_root),
        "GRN_INDEX_POLL_SECONDS": "0",
        "GRN_WORKERS": "1",
        "GRN_BATCHING": "true" if batching else "false",
        "GRN_MAX_BATCH_SIZE": str(args.max_batch_size),
        "GRN_BATCH_WAIT_MS": str(args.batch_wait_ms),
        # throughput past the default load-shedding bound (16 on 2 cores) is measured, not shed
        "GRN_MAX_MODEL_REQUESTS": "0",
    }


# --- the load ----------------------------------------------------------------------------


def make_sender(scenario: str, images: list[Image], scene_ids: list[int]) -> Send:
    """A function of (client, request number) that sends one request of the scenario."""

    def upload(i: int) -> dict[str, tuple[str, bytes, str]]:
        image = images[i % len(images)]
        return {"file": (image.name, image.data, "image/jpeg")}

    async def classify(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post("/classify", files=upload(i))

    async def search_id(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post(
            "/search", json={"scene_id": scene_ids[i % len(scene_ids)], "k": 10}
        )

    async def search_image(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post("/search", files=upload(i), data={"k": "10"})

    senders: dict[str, Send] = {
        "classify": classify,
        "search_id": search_id,
        "search_image": search_image,
    }
    return senders[scenario]


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    """Requests completed, warm-up and drain included."""

    def fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1


async def load(base_url: str, send: Send, concurrency: int, warmup: float, seconds: float) -> Tally:
    """Workers send back to back; what completes inside [warm-up end, + seconds] counts."""
    tally = Tally()
    counter = itertools.count()
    async with load_client(base_url, concurrency) as client:
        loop = asyncio.get_running_loop()
        begin = loop.time() + warmup
        end = begin + seconds

        async def worker() -> None:
            while loop.time() < end:
                start = loop.time()
                try:
                    response = await send(client, next(counter))
                    kind = None if response.status_code == 200 else str(response.status_code)
                except httpx.HTTPError as exc:
                    kind = type(exc).__name__
                done = loop.time()
                tally.sent += 1
                if not begin <= done <= end:
                    continue
                if kind is None:
                    tally.latencies_ms.append((done - start) * 1000)
                else:
                    tally.fail(kind)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


ROUTES = {"classify": "/classify", "search_id": "/search", "search_image": "/search"}


def server_counters(base_url: str, route: str) -> dict[str, float]:
    """Sums and counts of the server's request-time and model histograms (/metrics)."""
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    labels = f'{{method="POST",route="{route}"}}'
    wanted = {
        "request_s": f"grn_http_request_duration_seconds_sum{labels}",
        "requests": f"grn_http_request_duration_seconds_count{labels}",
        "model_s": "grn_model_inference_seconds_sum",
        "images": "grn_model_batch_size_sum",
        "batches": "grn_model_batch_size_count",
    }
    found = {}
    for line in text.splitlines():
        for key, name in wanted.items():
            if line.startswith(name + " "):
                found[key] = float(line.split()[-1])
    return {key: found.get(key, 0.0) for key in wanted}


def measure(
    base_url: str,
    pid: int,
    scenario: str,
    send: Send,
    concurrency: int,
    batching: bool,
    args: argparse.Namespace,
) -> Cell:
    faults_before = minor_faults(pid)
    counters_before = server_counters(base_url, ROUTES[scenario])
    tally = asyncio.run(load(base_url, send, concurrency, args.warmup, args.seconds))
    counters = server_counters(base_url, ROUTES[scenario])
    faults_after = minor_faults(pid)
    delta = {key: counters[key] - counters_before[key] for key in counters}
    faults = None
    if faults_before is not None and faults_after is not None and tally.sent:
        faults = round((faults_after - faults_before) / tally.sent, 1)
    failures = sum(tally.failures.values())
    cell = Cell(
        batching=batching,
        scenario=scenario,
        concurrency=concurrency,
        seconds=args.seconds,
        ok=len(tally.latencies_ms),
        failures=failures,
        failure_kinds=tally.failures,
        requests_per_s=round(len(tally.latencies_ms) / args.seconds, 2),
        p50_ms=percentile(tally.latencies_ms, 50),
        p99_ms=percentile(tally.latencies_ms, 99),
        server_minor_faults_per_request=faults,
        server_ms_per_request=(
            round(delta["request_s"] / delta["requests"] * 1000, 2) if delta["requests"] else None
        ),
        server_model_ms_per_image=(
            round(delta["model_s"] / delta["images"] * 1000, 2) if delta["images"] else None
        ),
        server_mean_batch=(
            round(delta["images"] / delta["batches"], 2) if delta["batches"] else None
        ),
    )
    print(
        f"  {scenario:>12} c={concurrency:<3} {cell.requests_per_s:8.1f} req/s  "
        f"p50 {cell.p50_ms} ms  p99 {cell.p99_ms} ms  failures {failures} {tally.failures or ''}",
        flush=True,
    )
    return cell


def run_server(args: argparse.Namespace, batching: bool, images: list[Image]) -> dict[str, Any]:
    cells = []
    print(f"server with batching {'on' if batching else 'off'}:", flush=True)
    with serve(server_env(args, batching), port=args.port) as server:
        ids = scene_ids(server.url)
        for scenario in args.scenarios:
            send = make_sender(scenario, images, ids)
            for concurrency in args.concurrency:
                cells.append(
                    measure(server.url, server.pid, scenario, send, concurrency, batching, args)
                )
    return {"batching": batching, "ready": server.ready, "cells": cells}


# --- report ------------------------------------------------------------------------------


def find(cells: list[Cell], batching: bool, scenario: str, concurrency: int) -> Cell | None:
    for cell in cells:
        if (cell.batching, cell.scenario, cell.concurrency) == (batching, scenario, concurrency):
            return cell
    return None


def derived(cells: list[Cell], model: list[ModelRow]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    on, off = find(cells, True, "classify", 32), find(cells, False, "classify", 32)
    if on and off and off.requests_per_s > 0:
        out["classify_c32_batched_over_unbatched"] = round(
            on.requests_per_s / off.requests_per_s, 3
        )
    single = find(cells, False, "classify", 1)
    base = next((row for row in model if row.batch_size == 1), None)
    if single and single.p50_ms is not None and base:
        overhead = (single.p50_ms - base.ms_per_image) / base.ms_per_image * 100
        out["serving_overhead_c1_unbatched_percent"] = round(overhead, 1)
        out["classify_c1_unbatched_p50_ms"] = single.p50_ms
        out["model_batch1_ms_per_image"] = base.ms_per_image
    if single and single.server_ms_per_request and single.server_model_ms_per_image:
        # the same ratio inside the server: its time per request against its model's time
        inside = single.server_ms_per_request / single.server_model_ms_per_image - 1
        out["serving_overhead_c1_unbatched_in_server_percent"] = round(inside * 100, 1)
        out["server_ms_per_classify_c1_unbatched"] = single.server_ms_per_request
        out["server_model_ms_per_image_c1_unbatched"] = single.server_model_ms_per_image
    by_id = find(cells, False, "search_id", 1)
    by_id_on = find(cells, True, "search_id", 1)
    if by_id:
        out["search_id_c1_p50_ms_unbatched"] = by_id.p50_ms
    if by_id_on:
        out["search_id_c1_p50_ms_batched"] = by_id_on.p50_ms
    return out


def markdown(
    cells: list[Cell], model: list[ModelRow], recheck: list[ModelRow], figures: dict[str, Any]
) -> str:
    lines = [
        "| batching | scenario | concurrency | requests/s | p50 ms | p99 ms | ok | failures "
        "| server ms/request | server model ms/image | mean batch | server page faults/request |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cells:
        lines.append(
            f"| {'on' if c.batching else 'off'} | {c.scenario} | {c.concurrency} | "
            f"{c.requests_per_s:.1f} | {c.p50_ms} | {c.p99_ms} | {c.ok} | {c.failures} | "
            f"{c.server_ms_per_request} | {c.server_model_ms_per_image} | "
            f"{c.server_mean_batch} | {c.server_minor_faults_per_request} |"
        )
    lines += [
        "",
        "| model alone, batch | images/s | ms/image | batch p90 ms | page faults/image "
        "| ms/image after servers |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    after = {r.batch_size: f"{r.ms_per_image:.2f}" for r in recheck}
    lines += [
        f"| {r.batch_size} | {r.images_per_s:.1f} | {r.ms_per_image:.2f} | {r.batch_ms_p90} | "
        f"{r.minor_faults_per_image} | {after.get(r.batch_size, '')} |"
        for r in model
    ]
    lines += ["", "| derived | value |", "| --- | ---: |"]
    lines += [f"| {key} | {value} |" for key, value in figures.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archive", type=Path, default=UCM)
    parser.add_argument("--images", type=int, default=64, help="UCM JPEGs cycled through")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed window per cell")
    parser.add_argument("--warmup", type=float, default=3.0, help="uncounted, before each cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--max-batch-size", type=int, default=4, help="GRN_MAX_BATCH_SIZE")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="GRN_BATCH_WAIT_MS")
    parser.add_argument("--database-url", default="sqlite:///data/grn.db")
    parser.add_argument("--model", type=Path, default=Path("runs/ucm-head/model.safetensors"))
    parser.add_argument("--index-root", type=Path, default=Path("data/index"))
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--model-batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--model-reps", type=int, default=5, help="timed passes per batch size")
    parser.add_argument(
        "--model-recheck",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the model alone again after the servers, to see drift",
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs/results/service-bench.json")
    args = parser.parse_args()

    images = load_images(args.archive, args.images)
    print(
        f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{len(images)} UCM images",
        flush=True,
    )
    model = model_baseline(REPO / args.model, images, args.model_batches, args.model_reps)
    servers = [run_server(args, batching, images) for batching in (True, False)]
    recheck: list[ModelRow] = []
    if args.model_recheck:
        print("model alone again, after the servers (a check on drift):", flush=True)
        recheck = model_baseline(REPO / args.model, images, args.model_batches, args.model_reps)
    cells = [cell for run in servers for cell in run["cells"]]
    figures = derived(cells, model)
    print()
    print(markdown(cells, model, recheck, figures))
    failures = sum(cell.failures for cell in cells)
    if failures:
        print(f"\nWARNING: {failures} requests failed (see the failures column)", file=sys.stderr)

    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "settings": {key: str(v) if isinstance(v, Path) else v for key, v in vars(args).items()},
        "command": invocation(),
        "model_alone": [asdict(row) for row in model],
        "model_alone_after_servers": [asdict(row) for row in recheck],
        "servers": [{"batching": run["batching"], "ready": run["ready"]} for run in servers],
        "cells": [asdict(cell) for cell in cells],
        "derived": figures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
