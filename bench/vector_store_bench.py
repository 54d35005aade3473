"""The vector stores side by side: FaissCollection (FAISS Flat in the process, the baseline,
`index/stores/faiss.py`) and MilvusCollection on Milvus Lite (embedded in the process),
measured in the same run on the same data.

    python -m bench.vector_store_bench --sizes 2100 100000 --out docs/results/vector-stores.json

Data: 128-d clustered unit vectors (index/synthetic.py, the spread of docs/index.md), each
with 17 labels drawn with UCM's label frequencies' order of magnitude (each label present
with probability 0.2) and one of 21 folders. For each store and size: the time to add every
vector, then single-query latency (p50/p99 over `--singles` queries) with no filter, with a
`labels_any` filter of two labels and with a folder filter, and recall@10 of each against
brute force over the scenes that pass (both stores search exactly: it must be 1.0).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from index.filters import SceneFilter, SceneMeta
from index.results import exact_search, recall_at_k
from index.stores.faiss import FaissCollection
from index.stores.milvus_collection import MilvusCollection
from index.synthetic import clustered_unit_vectors, random_scene_metas

DIM = 128
LABELS = [f"label{i}" for i in range(17)]


def make_data(n: int, queries: int) -> tuple[np.ndarray, np.ndarray, list[SceneMeta], np.ndarray]:
    rng = np.random.default_rng(n)
    data = clustered_unit_vectors(n + queries, DIM, max(21, n // 100), 0.039, seed=n)
    ids = rng.choice(2**62, size=n, replace=False).astype(np.int64)
    metas = random_scene_metas(n, LABELS, rng, label_share=0.2, folders=21)
    return ids, data[:n], metas, data[n:]


def measure(
    store: Any, ids, vectors, metas, queries, singles: int, settle=None, filters=None
) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Add every vector (then `settle()`, timed with it: what a store needs before its
    searches see them all), then the searches, filtered and not (`filters`, by name; these
    below by default), against brute force."""
    start = time.perf_counter()
    store.add(ids, vectors, metas)
    if settle is not None:
        settle()
    added = time.perf_counter() - start
    row: dict[str, Any] = {"add_s": added, "add_per_s": len(ids) / added}
    filters = filters or {
        "none": None,
        "labels_any": SceneFilter(labels_any=["label3", "label7"]),
        "folder": SceneFilter(folder="folder5"),
    }
    for name, where in filters.items():
        passing = np.asarray(
            [where is None or where.passes(int(i), m) for i, m in zip(ids, metas, strict=True)]
        )
        truth = exact_search(vectors[passing], ids[passing], queries, 10)
        found = store.search(queries, 10, where)
        times = []
        for q in queries[:singles]:
            begin = time.perf_counter()
            store.search(q[None], 10, where)
            times.append((time.perf_counter() - begin) * 1000)
        times.sort()
        row[name] = {
            "passing": int(passing.sum()),
            "recall_at_10": recall_at_k(found.ids, truth.ids, 10, found.scores, truth.scores),
            "p50_ms": statistics.median(times),
            "p99_ms": times[int(0.99 * (len(times) - 1))],
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2100, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--singles", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import faiss
    import milvus_lite
    import pymilvus

    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, faiss {faiss.__version__}, pymilvus "
        f"{pymilvus.__version__}, milvus-lite {milvus_lite.__version__}",
        "rows": [],
    }
    print(report["machine"], flush=True)
    for n in args.sizes:
        ids, vectors, metas, queries = make_data(n, args.queries)
        with tempfile.TemporaryDirectory() as folder:
            stores = {
                "FaissCollection (Flat)": FaissCollection(model_version="bench", dim=DIM),
                "MilvusCollection (Milvus Lite)": MilvusCollection(
                    str(Path(folder) / "bench.db"), "scenes", DIM, "bench"
                ),
            }
            for name, store in stores.items():
                row = {
                    "n": n,
                    "store": name,
                    **measure(store, ids, vectors, metas, queries, args.singles),
                }
                report["rows"].append(row)
                print(json.dumps(row), flush=True)
            stores["MilvusCollection (Milvus Lite)"].close()
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
