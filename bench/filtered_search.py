"""Filtered `POST /search` by scene id at archive scale (issue 36, item 4), this tree against a
baseline tree (the old path: the filter listed as ids, FAISS's `IDSelectorBatch`), both
serving the same database and index at once, requests alternating between them so that both
see the same load.

For each size (10k, 100k, 1M by default) a `grn synth` archive (kept under `--work`), each
database a fresh one and `grn import --bulk` (this tree's); then the two servers and, one
request at a time, k=10 searches by the same scene ids with no filter and with filters
keeping about 1% and 50% of the scenes (labels, bbox, added date: `bench.scale_truth`),
each answer checked against brute force over the filtered set (re-ranked as the service
says it re-ranked): p50/p99, the first search of each filter (the mask made, the index's
entries mapped to the catalog's rows), recall@10 (mean and lowest), short pages.

    git archive BASE | tar -x -C /tmp/grn-baseline    # the tree to compare against
    python -m bench.filtered_search --baseline /tmp/grn-baseline \
        --out docs/results/filtered-search.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench._common import MODEL, checked_grn, invocation, percentiles, print_closing, save_report
from bench.bulk_import import workspace
from bench.scale import archive, service_env
from bench.scale_http import K, _post
from bench.scale_truth import Truth, filters, load_truth
from bench.server import serve
from model import rerank

SIZES = (10_000, 100_000, 1_000_000)
TREES = ("old", "new")


@contextmanager
def both_trees(
    env: dict[str, str], baseline: Path, truth: Truth, rows: np.ndarray, report: dict[str, Any]
) -> Iterator[tuple[dict[str, httpx.Client], Callable[[], dict[str, int]]]]:
    """The baseline tree's server ("old") and this tree's ("new") over the same database and
    index, each warmed up with searches by the last 20 of `rows`; yields their clients and a
    reader of both servers' RSS (MiB). Their start-up times go into `report`."""
    with (
        serve(env, tree=baseline) as old,
        serve(env) as new,
        httpx.Client(base_url=old.url, timeout=300) as old_client,
        httpx.Client(base_url=new.url, timeout=300) as new_client,
    ):
        clients = {"old": old_client, "new": new_client}
        report["startup_s"] = {"old": round(old.startup_s, 1), "new": round(new.startup_s, 1)}
        for row in rows[-20:]:  # warm up: arrays, index pages, the first requests
            for client in clients.values():
                client.post("/search", json={"scene_id": str(truth.ids[row]), "k": K})
        yield clients, lambda: {"old": old.rss_kib() // 1024, "new": new.rss_kib() // 1024}


def answers(
    clients: dict[str, httpx.Client], truth: Truth, rows: np.ndarray, fields: dict[str, Any]
) -> dict[str, Any]:
    """Searches by the scenes at `rows` with the filter `fields` on both servers (which goes
    first alternates): per tree p50/p99, the first search's ms, recall@10 against brute
    force over the scenes the filter keeps, and pages shorter than they can be."""
    kept = truth.keeps(fields)
    times: dict[str, list[float]] = {tree: [] for tree in TREES}
    recalls: dict[str, list[float]] = {tree: [] for tree in TREES}
    short = dict.fromkeys(TREES, 0)
    for turn, row in enumerate(rows):
        expected: dict[bool, list[int]] = {}
        for tree in TREES if turn % 2 else TREES[::-1]:
            body = {"scene_id": str(truth.ids[row]), "k": K, **fields}
            elapsed, answer = _post(clients[tree], json=body)
            times[tree].append(elapsed)
            got = [int(hit["id"]) for hit in answer["hits"]]
            reranked = bool(answer.get("reranked"))
            if reranked not in expected:
                pool = rerank.POOL if reranked else None
                expected[reranked] = truth.nearest(int(row), kept, K, pool)
            wanted = expected[reranked]
            recalls[tree].append(len(set(got) & set(wanted)) / max(1, len(wanted)))
            short[tree] += len(got) < len(wanted)
    return {
        "selectivity": round(float(kept.mean()), 4),
        "fields": fields,
        **{
            tree: {
                **percentiles(times[tree][1:], upper=(99,)),
                "first_ms": round(times[tree][0], 1),
                "recall_at_10": round(float(np.mean(recalls[tree])), 4),
                "min_recall_at_10": round(float(np.min(recalls[tree])), 4),
                "short_pages": short[tree],
            }
            for tree in TREES
        },
    }


def measure(folder: Path, truth: Truth, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Both trees' searches over one size on one database."""
    size = len(truth)
    url, drop, scratch = workspace(kind, args.postgres, args.work, f"grn_filtered_{kind}_{size}")
    env = service_env(url, args.model, scratch) | {"GRN_INDEX_POLL_SECONDS": "0"}
    out: dict[str, Any] = {"database": kind, "scenes": size, "load_before": os.getloadavg()}
    try:
        checked_grn("db", "upgrade", env=env)
        seconds, _ = checked_grn("import", str(folder), "--bulk", "--quiet", env=env)
        out["import_s"] = round(seconds, 1)
        rows = np.random.default_rng(0).choice(size, args.searches + 1, replace=False)
        with both_trees(env, args.baseline, truth, rows, out) as (clients, rss_mib):
            out["filters"] = {"unfiltered": answers(clients, truth, rows, {})}
            for label, fields in filters(truth).items():
                out["filters"][label] = answers(clients, truth, rows, fields)
                print(line(size, kind, label, out["filters"][label]), flush=True)
            out["rss_mib"] = rss_mib()
    finally:
        drop()
        shutil.rmtree(scratch, ignore_errors=True)
    out["load_after"] = os.getloadavg()
    return out


def line(size: int, kind: str, label: str, result: dict[str, Any]) -> str:
    """One row of the table: both trees' p50/p99, the new tree's first search, recall."""
    old, new = result["old"], result["new"]
    cells = [
        f"{size:,}", kind, label, f"{result['selectivity']:.2%}",
        f"{old['p50_ms']:.1f} / {old['p99_ms']:.1f}", f"{new['p50_ms']:.1f} / {new['p99_ms']:.1f}",
        f"{new['first_ms']:.0f}",
        f"{old['recall_at_10']:.3f} ({old['min_recall_at_10']:.1f})",
        f"{new['recall_at_10']:.3f} ({new['min_recall_at_10']:.1f})",
        f"{old['short_pages']} / {new['short_pages']}", f"{os.getloadavg()[0]:.1f}",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| scenes | database | filter | kept | old p50 / p99 ms | new p50 / p99 ms | new first ms "
    "| old recall@10 (min) | new recall@10 (min) | short pages old / new | load 1-min |\n"
    + "| ---: " * 11
    + "|"
)


def in_process(index_file: Path, truth: Truth, args: argparse.Namespace) -> dict[str, Any]:
    """The search path alone at the size of an existing `IVF...,Flat` index file, old against
    new in this process: the index written as a version and served memory-mapped, a catalog
    table over its ids with the archive's columns row by row (labels, footprints, added
    times), the query scene excluded; the old path lists the freshly evaluated mask's ids
    (FAISS's selector, reconstructed vectors), the new one hands the kept mask over. No
    re-ranking, no SQL, no HTTP; brute force over the filtered set is the truth."""
    from datetime import datetime

    import faiss

    from index.filters import SceneFilter
    from index.stores.faiss import Searcher
    from index.stores.faiss_versions import IndexStore
    from index.vectors import SearchSettings
    from service.api.lifespan import numpy_blas_single_threaded
    from service.storage.scene_table import SceneTable

    numpy_blas_single_threaded()
    faiss.omp_set_num_threads(1)
    store = IndexStore(args.work / "in-process-index")
    if store.current_version() is None:
        index = faiss.read_index(str(index_file))
        store.activate(store.write_version(index, model_version="m", factory="file").version)
    searcher = Searcher(store.load(mapped=True), SearchSettings())
    assert searcher.scan is not None, "an IVF-Flat or Flat index file is needed"
    ids, n = searcher.ids, len(searcher.ids)
    rows_of = searcher.scan.rows(ids)[1]
    vectors = searcher.scan.vectors(rows_of)  # in the catalog's order
    places = np.concatenate([truth.bounds[:n], truth.bounds[:n, :2]], axis=1)
    table = SceneTable(
        1, ids, np.full(n, "", dtype=object), np.zeros(n, np.int32), ["f"],
        np.zeros(n, np.int32), ["s"], truth.labels[:n], truth.label_names,
        np.zeros(n, np.int32), [()], places=places,
        added=(truth.added[:n] * 1e6).astype(np.int64),
    )  # fmt: skip
    queries = np.random.default_rng(0).choice(n, args.searches + 1, replace=False)
    out: dict[str, Any] = {"scenes": n, "load_before": os.getloadavg(), "filters": {}}
    for label, fields in {"unfiltered": {}, **filters(truth)}.items():
        where = SceneFilter(
            labels_all=fields.get("labels_all", ()), bbox=fields.get("bbox"),
            added_after=datetime.fromisoformat(fields["added_after"]) if fields.get(
                "added_after") else None,
        )  # fmt: skip
        times: dict[str, list[float]] = {tree: [] for tree in TREES}
        recalls: dict[str, list[float]] = {tree: [] for tree in TREES}
        for row in queries:
            excluding = where.excluding(int(ids[row]))
            keep = table.mask(excluding) if where.restricts else np.ones(n, bool)
            keep[row] = False
            scores = np.where(keep, vectors @ vectors[row], -np.inf)
            best = np.argpartition(-scores, K)[:K]
            truth_ids = ids[best[np.isfinite(scores[best])]]
            for tree in TREES:
                started = time.perf_counter()
                if not where.restricts:
                    found = searcher.search(vectors[row][None], K, excluding)
                elif tree == "new":
                    allowed = SceneFilter(allow_ids=table.allowed(excluding))
                    found = searcher.search(vectors[row][None], K, allowed)
                else:  # evaluated afresh and listed, as before
                    fresh = table._evaluated(where).copy()
                    fresh[row] = False
                    found = searcher.search(
                        vectors[row][None], K, SceneFilter(allow_ids=ids[fresh])
                    )
                times[tree].append((time.perf_counter() - started) * 1000)
                got = set(found.ids[0].tolist())
                recalls[tree].append(len(got & set(truth_ids.tolist())) / max(1, len(truth_ids)))
        result = {"selectivity": round(float(table.mask(where).mean()), 4), "fields": fields}
        for tree in TREES:
            result[tree] = {
                **percentiles(times[tree][1:], upper=(99,)), "first_ms": round(times[tree][0], 1),
                "recall_at_10": round(float(np.mean(recalls[tree])), 4),
                "min_recall_at_10": round(float(np.min(recalls[tree])), 4), "short_pages": 0,
            }  # fmt: skip
        out["filters"][label] = result
        print(line(n, "in-process", label, result), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="The old tree.")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--database", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])  # fmt: skip
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--work", type=Path, default=Path("/tmp/grn-scale"))
    parser.add_argument("--searches", type=int, default=100, help="Per filter and tree.")
    parser.add_argument("--in-process", type=Path, metavar="INDEX_FILE",
                        help="Only the search path, over this index file, with the columns "
                        "of the largest size's archive (no servers, no SQL).")  # fmt: skip
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"command": invocation(), "cores": os.cpu_count(), "results": []}
    print(HEADER, flush=True)
    if args.in_process:
        folder, _ = archive(args.work, max(args.sizes), args.model)
        report["results"].append(in_process(args.in_process, load_truth(folder), args))
        args.sizes = []
    for size in sorted(args.sizes):
        folder, _ = archive(args.work, size, args.model)
        truth = load_truth(folder)
        for kind in args.database:
            result = measure(folder, truth, kind, args)
            print(line(size, kind, "unfiltered", result["filters"]["unfiltered"]), flush=True)
            report["results"].append(result)
            save_report(report, args.out)
    save_report(report, args.out)
    print_closing(report)


if __name__ == "__main__":
    main()
