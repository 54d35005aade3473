"""Resident memory of a service process searching an IVF-PQ index with re-ranking.

    python -m bench.pq_memory --n 10000000 --root /tmp/grn-pq-index [--reuse]

Builds IVF-PQ over n synthetic vectors (the mixture of bench/index_bench.py), stores it as an
index version with its full vectors (index/stores/faiss_versions.py), then, in a fresh process,
loads that version as the service does and answers 1000 queries with re-ranking, printing
recall@10 against exact search and the process's memory from /proc/self/status: anonymous
memory (the index and the process) apart from file-backed pages of the memory-mapped full
vectors, which the kernel can drop and re-read. Each setting runs twice, reading the full
vectors as the service does (`pread`, index/vectors.py's VectorFile) and, as the baseline,
through a memory map. `--reuse` skips the build when ROOT already holds one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from bench._common import child_env
from index.stores.faiss_versions import IndexStore
from index.synthetic import clustered_unit_vectors
from index.vectors import (
    FullVectors,
    SearchSettings,
    build_index,
    exact_search,
    recall_at_k,
    search,
)


def status_kib() -> dict[str, int]:
    fields = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields


def data(n: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    mixture = clustered_unit_vectors(
        n + queries, 128, min(20_000, max(21, n // 100)), 0.039, seed=n
    )
    return mixture[:n], mixture[n:]


def serve(root: str, n: int, nprobe: int, rerank: int, reader: str) -> None:
    start = time.perf_counter()
    loaded = IndexStore(root).load()
    load_s = time.perf_counter() - start
    if reader == "mmap":
        assert loaded.full_vectors is not None
        folder = loaded.path.parent
        loaded.full_vectors = FullVectors(
            loaded.full_vectors.ids, np.load(folder / "vectors.npy", mmap_mode="r")
        )
    queries = np.load(f"{root}/queries.npy")
    truth = np.load(f"{root}/truth.npy")
    settings = SearchSettings(nprobe=nprobe, rerank_factor=rerank)
    before = status_kib()
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        found.append(
            search(
                loaded.index, q[None], 10, settings=settings, full_vectors=loaded.full_vectors
            ).ids[0]
        )
        times.append((time.perf_counter() - t) * 1000)
    after = status_kib()
    print(
        json.dumps(
            {
                "n": n,
                "factory": loaded.manifest.factory,
                "reader": reader,
                "nprobe": nprobe,
                "rerank_factor": rerank,
                "load_s": load_s,
                "recall_at_10": recall_at_k(np.asarray(found), truth, 10),
                "p50_ms": float(np.percentile(times, 50)),
                "p99_ms": float(np.percentile(times, 99)),
                "kib_after_load": before,
                "kib_after_queries": after,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--root", default="/tmp/grn-pq-index")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--nprobe", type=int, default=64)
    parser.add_argument("--rerank", type=int, default=50)
    parser.add_argument("--reader", choices=("pread", "mmap"), default="pread")
    parser.add_argument("--reuse", action="store_true", help="Keep an index already built.")
    args = parser.parse_args()
    if args.serve:
        serve(args.root, args.n, args.nprobe, args.rerank, args.reader)
        return
    if not (args.reuse and IndexStore(args.root).current_version()):
        build(args.n, args.root)
    for nprobe, rerank in ((16, 10), (64, 50)):
        for reader in ("pread", "mmap"):
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.pq_memory",
                    "--serve",
                    "--root",
                    args.root,
                    "--n",
                    str(args.n),
                    "--nprobe",
                    str(nprobe),
                    "--rerank",
                    str(rerank),
                    "--reader",
                    reader,
                ],
                env=child_env(),
                check=True,
            )


def build(n: int, root: str) -> None:
    vectors, queries = data(n, 1000)
    ids = np.arange(n, dtype=np.int64)
    nlist = 16384 if n >= 4_000_000 else 4096
    factory = f"IVF{nlist},PQ32"
    start = time.perf_counter()
    index = build_index(factory, ids, vectors)
    print(f"built {factory} over {n} vectors in {time.perf_counter() - start:.0f} s")
    store = IndexStore(root)
    manifest = store.write_version(
        index, model_version="bench", factory=factory, full_vectors=FullVectors(ids, vectors)
    )
    store.activate(manifest.version)
    np.save(f"{root}/queries.npy", queries)
    np.save(f"{root}/truth.npy", exact_search(vectors, ids, queries, 10).ids)
    del index, vectors


if __name__ == "__main__":
    main()
