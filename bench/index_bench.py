"""Index benchmark: build time, memory, latency and recall@10 by archive size and index type.

    python -m bench.index_bench --sizes 10000 100000 1000000 --out docs/results/index-bench.json

Vectors: 128-d unit vectors from the subspace mixture of index/synthetic.py with the
parameters bench/embedding_fit.py fit to real GRN embeddings of UCM (rank 8, one centre per
100 vectors, within 0.5, noise 0.05, shift 0.5: IVF's recall curve within 0.01-0.05 of the
real one at 2100 to 8400 vectors; docs/index.md). `--generator mixture` gives the earlier,
far easier Gaussian mixture (`--spread`). Queries are fresh draws from the same generator.
The baseline is plain numpy brute force (a matrix product and argpartition), measured in the
same run; recall@10 is against exact search.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from index.synthetic import clustered_unit_vectors, subspace_unit_vectors
from index.vectors import (
    FullVectors,
    SearchResult,
    SearchSettings,
    auto_factory,
    build_index,
    exact_search,
    is_lossy,
    recall_at_k,
    search,
)

DIM = 128
GIB = 2**30


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def latencies(
    fn: Callable[[np.ndarray], Any], queries: np.ndarray, batch: int, repeats: int
) -> list[float]:
    out = []
    for i in range(repeats):
        chunk = queries[(i * batch) % len(queries) :][:batch]
        start = time.perf_counter()
        fn(chunk)
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(times: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def numpy_search(
    vectors: np.ndarray, ids: np.ndarray, k: int
) -> Callable[[np.ndarray], SearchResult]:
    return lambda q: exact_search(vectors, ids, q, k)


def serialized_size(index: faiss.Index) -> int:
    """Bytes the index takes written out, counted as FAISS writes it (serialize_index would
    hold a second copy of the index in memory: at 10M HNSW32 that ran out of 24 GB)."""
    total = 0

    def count(chunk: bytes) -> int:
        nonlocal total
        total += len(chunk)
        return len(chunk)

    writer = faiss.PyCallbackIOWriter(count)
    faiss.write_index(index, writer)
    del writer  # flushes the last chunk
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--generator", choices=["subspace", "mixture"], default="subspace")
    parser.add_argument("--spread", type=float, default=0.039, help="the mixture's")
    parser.add_argument("--nprobes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--singles", type=int, default=300)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--types", nargs="+", default=["Flat", "IVF", "HNSW32", "IVF-PQ"])
    parser.add_argument("--hnsw-max", type=int, default=1_000_000)
    parser.add_argument("--flat-max", type=int, default=1_000_000)
    parser.add_argument("--baseline-singles", type=int, default=300)
    parser.add_argument("--rerank-dir", default="/tmp", help="where full vectors are memory-mapped")
    parser.add_argument("--out")
    args = parser.parse_args()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    rows: list[dict[str, Any]] = []
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, faiss {faiss.__version__}, "
        f"numpy {np.__version__}, generator {args.generator}"
    )
    for n in args.sizes:
        centres = min(20_000, max(21, n // 100))
        if args.generator == "mixture":
            data = clustered_unit_vectors(n + args.queries, DIM, centres, args.spread, seed=n)
        else:
            data = subspace_unit_vectors(
                n + args.queries, DIM, rank=8, centres=max(1, (n + args.queries) // 100),
                within=0.5, noise=0.05, shift=0.5, seed=n,
            )  # fmt: skip
        vectors, queries = data[:n], data[n:]
        ids = np.arange(n, dtype=np.int64)
        start = time.perf_counter()
        truth = exact_search(vectors, ids, queries, 10)
        truth_seconds = time.perf_counter() - start
        base = {
            "n": n,
            "index": "numpy brute force",
            "build_s": 0.0,
            "memory_bytes": vectors.nbytes,
            "recall_at_10": 1.0,
            "single": summary(
                latencies(numpy_search(vectors, ids, 10), queries, 1, args.baseline_singles)
            ),
            "batch64": summary(
                latencies(numpy_search(vectors, ids, 10), queries, 64, args.batches)
            ),
        }
        rows.append(base)
        print(json.dumps(base), flush=True)
        nlist = int(auto_factory(n, DIM, 64 * GIB).split(",")[0][3:]) if n > 20_000 else 64
        plans: list[tuple[str, SearchSettings]] = []
        for kind in args.types:
            if kind == "Flat" and n <= args.flat_max:
                plans.append(("Flat", SearchSettings()))
            elif kind == "IVF":
                plans += [(f"IVF{nlist},Flat", SearchSettings(nprobe=p)) for p in args.nprobes]
            elif kind.startswith("HNSW") and n <= args.hnsw_max:
                plans += [(kind, SearchSettings(ef_search=e)) for e in (32, 128)]
            elif kind == "IVF-PQ":
                plans += [(f"IVF{nlist},PQ32", SearchSettings(nprobe=p)) for p in (16, 64)]
                plans += [
                    (f"IVF{nlist},PQ32+rerank", SearchSettings(nprobe=p, rerank_factor=r))
                    for p, r in ((16, 10), (64, 10), (64, 50))
                ]
        built: dict[str, tuple[faiss.Index, float, int]] = {}
        full = None
        if any(f.endswith("+rerank") for f, _ in plans):
            path = os.path.join(args.rerank_dir, f"grn-bench-vectors-{n}.npy")
            np.save(path, vectors)  # sorted by id already: ids are 0..n-1
            full = FullVectors(ids, np.load(path, mmap_mode="r"))
        for name, settings in plans:
            factory = name.removesuffix("+rerank")
            rerank = full if name.endswith("+rerank") else None
            if factory not in built:
                start = time.perf_counter()
                index = build_index(factory, ids, vectors)
                seconds = time.perf_counter() - start
                built[factory] = (index, seconds, serialized_size(index))
            index, seconds, size = built[factory]
            found = search(index, queries, 10, settings=settings, full_vectors=rerank)
            row = {
                "n": n,
                "index": name,
                "nprobe": settings.nprobe,
                "ef_search": settings.ef_search,
                "rerank_factor": settings.rerank_factor if rerank is not None else 0,
                "build_s": seconds,
                "memory_bytes": size,
                # ties count only where the index's scores are exact (a PQ index's are not)
                "recall_at_10": recall_at_k(found.ids, truth.ids, 10, found.scores, truth.scores)
                if rerank is not None or not is_lossy(index)
                else recall_at_k(found.ids, truth.ids, 10),
                "single": summary(
                    latencies(
                        lambda q, i=index, s=settings, r=rerank: search(
                            i, q, 10, settings=s, full_vectors=r
                        ),
                        queries,
                        1,
                        args.singles,
                    )
                ),
                "batch64": summary(
                    latencies(
                        lambda q, i=index, s=settings, r=rerank: search(
                            i, q, 10, settings=s, full_vectors=r
                        ),
                        queries,
                        64,
                        args.batches,
                    )
                ),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        rows.append(
            {
                "n": n,
                "auto": auto_factory(n, DIM, 8 * GIB),
                "auto_1gib": auto_factory(n, DIM, 1 * GIB),
                "truth_s": truth_seconds,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        del built
        if full is not None:
            os.remove(os.path.join(args.rerank_dir, f"grn-bench-vectors-{n}.npy"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"peak resident memory {peak / GIB:.2f} GiB")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"rows": rows, "peak_rss_bytes": peak}, handle, indent=1)


if __name__ == "__main__":
    main()
