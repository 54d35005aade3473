"""Embedding throughput on a Ray cluster of N nodes on this host, per node, beside the
single-process path in the same run.

    python -m bench.ray_cluster_bench --nodes 3 --out docs/results/ray-cluster.json

Embeds the whole UCM archive (2,100 scenes) with the `make run` model: first by the plain
path (`model.embedding.embed_scenes`, one process), then, for each N of `--nodes`, on a
cluster of a head and N-1 worker nodes started with `ray start` on 127.0.0.1
(`index.ray_cluster`), joined through its address as `grn embed --ray-address` does, with
one embedding actor per node. Ray's start-up and the actors' first model load are outside
the timed part (a 16-scene warm-up runs first). Prints images/s for each and per node, the
embedding actors seen on each node while it ran and each node's memory (summed RSS of its
processes, idle and at peak), whether the Ray embeddings equal the plain
ones, and the 1-minute load average before and after each step.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from bench._common import MODEL, REPO, UCM
from index.ray_cluster import LocalRayCluster
from index.ray_embed import ray_embed, read_embeddings
from model.archive import load_archive, scene_id
from model.card import load_model
from model.embedding import embed_scenes


def load() -> float:
    return round(os.getloadavg()[0], 2)


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def watch(cluster: LocalRayCluster, stop: threading.Event, seen: dict[str, list]) -> None:
    """Per node, the most embedding actors (`ray::...MapWorker` processes) seen at once and
    the peak of its processes' summed RSS (shared pages counted in each)."""
    while True:
        for number, node in enumerate(cluster.nodes):
            pids = node.pids()
            actors = 0
            for pid in pids:
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                actors += title.startswith(b"ray::") and b"MapWorker" in title
            seen["actors"][number] = max(seen["actors"][number], actors)
            rss = round(sum(rss_mib(pid) for pid in pids))
            seen["rss_mib"][number] = max(seen["rss_mib"][number], rss)
        if stop.wait(0.5):
            return


def on_cluster(args: argparse.Namespace, nodes: int, scratch: Path) -> tuple[dict, Path]:
    import ray

    out = scratch / f"n{nodes}"
    with LocalRayCluster(workers=nodes - 1) as cluster:
        warm_labels = scratch / "warm.csv"
        lines = (args.archive / "labels.csv").read_text().splitlines()
        warm_labels.write_text("\n".join(lines[:17]) + "\n")
        ray_embed(args.model, args.archive, scratch / f"warm{nodes}", labels_csv=warm_labels,
                  workers=nodes, address=cluster.address)  # fmt: skip
        idle = [round(sum(rss_mib(pid) for pid in node.pids())) for node in cluster.nodes]
        before = load()
        seen: dict[str, list] = {"actors": [0] * nodes, "rss_mib": [0] * nodes}
        stop = threading.Event()
        watcher = threading.Thread(target=watch, args=(cluster, stop, seen))
        watcher.start()
        try:
            report = ray_embed(args.model, args.archive, out, workers=nodes,
                               batch_size=args.batch_size, address=cluster.address)  # fmt: skip
        finally:
            stop.set()
            watcher.join()
            ray.shutdown()
    row = {
        "path": f"Ray cluster, {nodes} nodes", "nodes": nodes, "actors": nodes,
        "seconds": round(report.seconds, 1), "images_per_s": round(report.images_per_s, 1),
        "images_per_s_per_node": round(report.images_per_s / nodes, 1),
        "actors_seen_per_node": seen["actors"], "idle_rss_mib_per_node": idle,
        "peak_rss_mib_per_node": seen["rss_mib"], "load_before": before, "load_after": load(),
    }  # fmt: skip
    return row, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=UCM)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--nodes", type=int, nargs="+", default=[3])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "docs/results/ray-cluster.json")
    args = parser.parse_args()
    archive = load_archive(args.archive)
    net, card = load_model(args.model, "cpu")
    before = load()
    start = time.perf_counter()
    plain = embed_scenes(
        net, card, archive, archive.indices(), device=torch.device("cpu"), progress=False
    )
    plain_s = time.perf_counter() - start
    del net
    plain_ids = np.asarray([scene_id(s.name) for s in archive.scenes], dtype=np.int64)
    order = np.argsort(plain_ids)
    rows = [{"path": "plain (one process)", "nodes": 1, "seconds": round(plain_s, 1),
             "images_per_s": round(len(plain_ids) / plain_s, 1),
             "load_before": before, "load_after": load()}]  # fmt: skip
    print(json.dumps(rows[-1]), flush=True)
    with tempfile.TemporaryDirectory(dir="/tmp") as scratch:
        for nodes in args.nodes:
            row, out = on_cluster(args, nodes, Path(scratch))
            ids, embeddings, _ = read_embeddings(out)
            row["each_scene_once"] = bool(np.array_equal(ids, plain_ids[order]))
            row["equal_to_plain"] = bool(
                row["each_scene_once"]
                and np.allclose(embeddings, plain.embeddings[order], atol=1e-4)
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "scenes": len(plain_ids),
        "model": str(args.model),
        "batch_size": args.batch_size,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
