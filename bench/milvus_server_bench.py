"""FAISS against a real Milvus standalone server on the same `grn synth` archive: build
time, single-query latency p50/p99 (no filter, two labels, a folder), recall@10 against
brute force over the scenes that pass, and the resident memory of each process.

    grn synth --scenes 100000 --out /tmp/synth-100k --no-descriptors
    python -m bench.milvus_server_bench --archive /tmp/synth-100k --sizes 10000 100000 \\
        --out docs/results/milvus-server.json

The baseline is FaissCollection (Flat, exact, in this process, one thread as the service
searches; it evaluates label and folder filters in Python over every scene, as in
bench.vector_store_bench); the other is
MilvusCollection (FLAT, exact) on the server of `bench.milvus_server`, reached through its
two relays (127.0.0.1 -> Unix socket -> the server's namespace). Both get the archive's
145-d vectors with each scene's labels and folder. Memory: this process's VmRSS growth for
FAISS (the index and its filter metadata), the server's VmRSS (and its relays') for Milvus.
Build: adding every vector; for Milvus also the flush and an exact count (every insert
taken in). `transport_p50_ms` is a round trip that does no work (the server's version): the
floor the relays and gRPC put under every Milvus answer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.milvus_server import MilvusServer
from bench.server import rss_kib
from bench.vector_store_bench import measure
from index.filters import SceneFilter, SceneMeta
from index.stores.faiss import FaissCollection
from index.stores.milvus_collection import MilvusCollection
from index.stores.milvus_filters import archive_meta
from model.archive import load_archive, scene_id

FILTERS_NOTE = "labels_any: sand or sea; folder: the archive's first scene's folder"


def archive_data(folder: Path) -> tuple[np.ndarray, np.ndarray, list[SceneMeta]]:
    """The ids, ranking vectors and filter metadata (labels, folder) of a `grn synth`
    archive, in its vectors' order."""
    ids = np.load(folder / "vectors" / "ids.npy")
    vectors = np.load(folder / "vectors" / "vectors.npy").astype(np.float32)
    archive = load_archive(folder, folder / "labels.csv")
    position = {scene_id(scene.name): n for n, scene in enumerate(archive.scenes)}
    metas = [archive_meta(archive, position[int(i)]) for i in ids]
    return ids, vectors, metas


def transport_ms(client: Any, rounds: int = 200) -> float:
    times = []
    for _ in range(rounds):
        begin = time.perf_counter()
        client.get_server_version()
        times.append((time.perf_counter() - begin) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, required=True, help="a `grn synth` archive")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--queries", type=int, default=200, help="scenes searched for")
    parser.add_argument("--singles", type=int, default=200, help="timed single queries")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import faiss
    import milvus
    import pymilvus

    faiss.omp_set_num_threads(1)  # as the service searches (FaissVersions.init_worker_thread)
    all_ids, all_vectors, all_metas = archive_data(args.archive)
    rng = np.random.default_rng(0)
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, faiss {faiss.__version__}, "
        f"pymilvus {pymilvus.__version__}, milvus (server) {milvus.__version__}",
        "archive": str(args.archive),
        "filters": FILTERS_NOTE,
        "load_before": os.getloadavg(),
        "rows": [],
    }
    print(report["machine"], "load", report["load_before"], flush=True)
    for n in args.sizes:
        ids, vectors, metas = all_ids[:n], all_vectors[:n], all_metas[:n]
        queries = vectors[rng.choice(n, args.queries, replace=False)]
        filters = {
            "none": None,
            "labels_any": SceneFilter(labels_any=["sand", "sea"]),
            "folder": SceneFilter(folder=metas[0].folder),
        }
        before = rss_kib(os.getpid())
        faiss_store = FaissCollection(model_version="bench", dim=vectors.shape[1])
        row = measure(faiss_store, ids, vectors, metas, queries, args.singles, filters=filters)
        row.update(
            n=n, store="FaissCollection (Flat)", rss_mib=(rss_kib(os.getpid()) - before) / 1024
        )
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
        del faiss_store
        with tempfile.TemporaryDirectory() as folder, MilvusServer(Path(folder)) as server:
            idle = rss_kib(server.server_pid)
            store = MilvusCollection(server.uri, "bench", vectors.shape[1], "bench")

            def settle(store: MilvusCollection = store, count: int = len(ids)) -> None:
                store.client.flush(store.collection)
                assert store.count() == count

            row = measure(store, ids, vectors, metas, queries, args.singles, settle, filters)
            relays = rss_kib(server.relay.pid) + rss_kib(server.process.pid)  # type: ignore[union-attr]
            row.update(
                n=n, store="MilvusCollection (FLAT) on the Milvus server",
                rss_mib=rss_kib(server.server_pid) / 1024, idle_rss_mib=idle / 1024,
                relays_rss_mib=relays / 1024, transport_p50_ms=transport_ms(store.client),
            )  # fmt: skip
            store.close()
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
    report["load_after"] = os.getloadavg()
    print("load", report["load_after"], flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
