"""Throughput as concurrency rises, with one and with two server processes, measured by wrk.

    make serve-prepare && apt-get install wrk
    python -m bench.workers [--workers 1 2] [--connections 1 32] [--seconds 15]

For each worker count a real server (`python -m service.cli serve --workers N` over make
run's database, model and index; index polling off; no load-shedding bound, so that capacity
is what is measured) is started, and wrk (one thread, keep-alive) drives, for each number of
connections, `POST /search` by scene id (k = 10, ids in turn; bench/wrk/search.lua), then
`POST /classify` with one UCM JPEG (bench/wrk/classify.lua). Printed per cell: requests/s,
p50 and p99 (wrk's latency distribution), non-2xx answers, and the server's memory: the sum of
its processes' proportional set sizes (PSS, shared pages split between the processes that map
them, /proc/PID/smaps_rollup), and the CPU time per request of the server and wrk together
(/proc/PID/stat and getrusage) and how many of the machine's cores that kept busy. The c = 1
to c = 32 ratio is printed per worker count. The client shares the machine's cores with the
server: once every core is busy, the ratio can only rise if each request costs less CPU.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench._common import REPO, UCM, made_run_env, median_ms
from bench.server import scene_ids, serve

WRK = REPO / "bench/wrk"


def server_files(pid: int, name: str) -> list[str]:
    """/proc/PID/`name` of `pid` and its children (uvicorn's workers), those still there."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    texts = []
    for p in pids:
        try:
            texts.append(Path(f"/proc/{p}/{name}").read_text())
        except OSError:
            continue
    return texts


def pss_mb(pid: int) -> float:
    """PSS of `pid` and its children."""
    found = [re.search(r"^Pss:\s+(\d+) kB", t, re.M) for t in server_files(pid, "smaps_rollup")]
    return sum(int(f.group(1)) for f in found if f) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and its children so far."""
    ticks = 0
    for text in server_files(pid, "stat"):
        fields = text.rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def seconds_of(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def wrk(
    url: str, script: str, connections: int, seconds: float, env: dict[str, str], server: int
) -> dict:
    args = ["wrk", "-t1", f"-c{connections}", "--timeout", "60s", "--latency", "-s",
            str(WRK / script), url]  # fmt: skip
    full_env = {**os.environ, **env}
    subprocess.run([*args[:1], "-d2s", *args[1:]], env=full_env, capture_output=True, check=True)
    server_before, client_before = cpu_seconds(server), children_cpu()
    out = subprocess.run([*args[:1], f"-d{seconds:.0f}s", *args[1:]], env=full_env,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    cpu = cpu_seconds(server) - server_before + children_cpu() - client_before
    found = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "cpu_ms": cpu / max(requests, 1) * 1000,
        "p50": seconds_of(found["50"]) * 1000,
        "p99": seconds_of(found["99"]) * 1000,
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def children_cpu() -> float:
    """CPU seconds of this process's finished children (wrk)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bare_baselines(
    env: dict[str, str], image: str, repeats: int = 300
) -> tuple[dict[str, float], Callable[[], float]]:
    """Median ms, in this process, of what the two routes wrap: the checked CPU engine on one
    prepared image (the network alone), and a search by scene id (its stored vector, FAISS
    k = 10 on the served version, the hits' rows from the catalog's arrays); and a probe that
    measures the network's median again (taken right before and after each `/classify` cell
    at c = 1, so that the ratio compares with the machine's speed of that moment)."""
    import numpy as np

    from index.stores import open_store
    from model.card import load_model
    from model.imageio import read_image
    from model.inference import prepare_batch
    from service.settings import Settings
    from service.storage.catalog import Catalog
    from service.storage.db import make_engine

    def warm_median_ms(call: Any) -> float:
        call()
        return median_ms(call, repeats)

    net, card = load_model(env["GRN_MODEL_PATH"], "cpu")
    batch = prepare_batch([read_image(image)], card.input_size).numpy()
    probe = partial(warm_median_ms, lambda: net.engine.run(batch))
    network = probe()
    settings = Settings(database_url=env["GRN_DATABASE_URL"], index_root=env["GRN_INDEX_ROOT"])
    store = open_store(settings.store)
    current = store.current()
    served = store.open(current.version, current.model_version)
    catalog = Catalog(make_engine(settings.database.database_url))
    ids = np.asarray(served.ids, dtype=np.int64)  # type: ignore[attr-defined]  # FAISS
    turn = iter(np.resize(ids, repeats + 1).tolist())

    def search_by_id() -> None:
        scene = next(turn)
        hits = served.search(served.vectors([scene]), 10)
        catalog.table().rows(hits.ids[0])

    return {"network_ms": network, "search_ms": warm_median_ms(search_by_id)}, probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    env = {**made_run_env(), "GRN_MAX_MODEL_REQUESTS": "0"}
    ucm = UCM / "images"
    image = str(next(ucm.rglob("*.jpg"), None) or next(ucm.rglob("*.*")))
    bare, network_probe = bare_baselines(env, image)
    print(f"in this process, medians: the network on one image {bare['network_ms']:.2f} ms; "
          f"search by id (FAISS k = 10 + catalog rows) {bare['search_ms']:.2f} ms")  # fmt: skip
    print(f"{'case':>18} {'workers':>7} {'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'non-2xx':>7} {'PSS MB':>7} {'CPU ms/req':>10} {'cores busy':>10}")  # fmt: skip
    ratios: list[str] = []
    c1: list[str] = []
    cores = len(os.sched_getaffinity(0))
    for workers in args.workers:
        with serve({**env, "GRN_WORKERS": str(workers)}) as server:
            url = server.url
            with httpx.Client(base_url=url) as client:
                for _ in range(4 * workers):  # every worker has answered once
                    client.get("/readyz").raise_for_status()
            ids = ",".join(str(i) for i in scene_ids(url, limit=500))
            cases = {
                "search by id k=10": ("search.lua", {"GRN_SCENE_IDS": ids}),
                "classify": ("classify.lua", {"GRN_IMAGE": image, "GRN_LATENCIES": ""}),
            }
            for case, (script, extra) in cases.items():
                cells = {}
                probes: list[float] = []
                for connections in args.connections:
                    probed = case == "classify" and connections == 1
                    if probed:
                        probes.append(network_probe())
                    cell = cells[connections] = wrk(
                        url, script, connections, args.seconds, extra, server.pid
                    )
                    if probed:
                        probes.append(network_probe())
                    print(f"{case:>18} {workers:>7} {connections:>5} {cell['per_s']:>8.1f} "
                          f"{cell['p50']:>8.1f} {cell['p99']:>8.1f} {cell['non_2xx']:>7} "
                          f"{pss_mb(server.pid):>7.0f} {cell['cpu_ms']:>10.2f} "
                          f"{cell['cpu_ms'] * cell['per_s'] / 1000:>7.2f}/{cores}",
                          flush=True)  # fmt: skip
                if 1 in cells:
                    if case == "classify":
                        ratio = cells[1]["p50"] / (sum(probes) / 2)
                        c1.append(f"{workers} worker(s): classify {cells[1]['p50']:.1f} ms = "
                                  f"{ratio:.2f}x the network ({probes[0]:.2f} ms before the "
                                  f"cell, {probes[1]:.2f} ms after)")  # fmt: skip
                    else:
                        c1.append(f"{workers} worker(s): search {cells[1]['p50']:.1f} ms = bare "
                                  f"+ {cells[1]['p50'] - bare['search_ms']:.2f} ms")  # fmt: skip
                low, high = min(cells), max(cells)
                ratios.append(f"{case}, {workers} worker(s): c = {high} / c = {low}: "
                              f"{cells[high]['per_s'] / cells[low]['per_s']:.2f}x")  # fmt: skip
    print("\n".join(ratios))
    print("c = 1 p50 against the bare work, per worker count: " + "; ".join(c1))


if __name__ == "__main__":
    main()
