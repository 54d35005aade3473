"""What re-ranking with the backbone's descriptors costs a search (model/rerank.py).

    make serve-prepare
    python -m bench.rerank_cost [--queries 200] [--repeats 3]

In this process, over make run's database, model and index version (which keeps
descriptors): `service.usecases.search.search_scenes`, k = 10, by scene id and by a vector with its
descriptor (as an upload is searched, without the network), for GRN_BACKBONE_RERANK off
(the baseline), auto (UCM is all seen content: decided, not re-ranked) and on (the index's
`--pools` nearest re-ranked; the default pool model.rerank.POOL first). Prints the best of
`--repeats` mean times per search.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from model.rerank import POOL
from service.runtime import Runtime
from service.settings import Settings
from service.storage.catalog import Catalog
from service.storage.db import make_engine
from service.usecases.search import Rerank, SearchQuery, search_scenes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pools", type=int, nargs="+", default=[POOL, 100])
    args = parser.parse_args()
    settings = Settings(device="cpu", index_poll_seconds=0)
    runtime = Runtime(settings)
    if not runtime.refresh():
        raise SystemExit(f"nothing to search: {runtime.problem}; run make serve-prepare")
    snapshot = runtime.current()
    catalog = Catalog(make_engine(settings.database.database_url))
    searcher: Any = snapshot.searcher
    ids = searcher.ids[: args.queries]
    vectors, descriptors = searcher.vectors(ids), searcher.descriptors(ids)
    if descriptors is None:
        raise SystemExit("the index version keeps no descriptors: rebuild it with grn reindex")
    print(f"index {snapshot.index_version}: {searcher.count} scenes; {len(ids)} queries, k = 10")
    baseline: dict[str, float] = {}
    cases = [("off", POOL), ("auto", POOL), *(("on", pool) for pool in args.pools)]
    for mode, pool in cases:
        for by in ("scene", "vector"):
            best, reranked = float("inf"), False
            for _ in range(args.repeats):
                start = time.perf_counter()
                for n, scene in enumerate(ids):
                    query: dict[str, Any] = (
                        {"scene_id": int(scene)}
                        if by == "scene"
                        else {"vector": vectors[n], "descriptor": descriptors[n]}
                    )
                    page = search_scenes(
                        snapshot,
                        catalog,
                        SearchQuery(k=10),
                        rerank=Rerank(mode, pool=pool),
                        **query,
                    )
                    reranked = page.reranked
                best = min(best, (time.perf_counter() - start) / len(ids) * 1000)
            baseline.setdefault(by, best)
            shown = f"{mode} {pool}" if mode == "on" else mode
            print(f"by {by:6s} {shown:7s} {best:.3f} ms/search ({best / baseline[by]:.2f}x off) "
                  f"reranked={reranked}")  # fmt: skip
    runtime.store.close()


if __name__ == "__main__":
    main()
