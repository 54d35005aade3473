"""What a saved concept costs a request (service/usecases/saved_concepts.py): saving one,
counting its scenes (`GET /concepts`), and a search by scene id filtered by it against the
same search unfiltered and filtered by a label (the baselines), in this process.

    make serve-prepare
    python -m bench.concept_filter [--label water] [--shots 10] [--queries 50] [--repeats 3]

Over make run's model and index version, on a copy of make run's database (the concept is
saved in the copy, never in data/grn.db): a concept saved from `--shots` scenes carrying
`--label` and as many without it; then the best of `--repeats` mean times of
`concept_allowed` (every served scene scored, the scenes at or above the threshold; and the
same from the service's `ScoreCache`, nothing having changed), of `concept_facet` and of
`search_scenes` by `--queries` scene ids, k = 10, unfiltered, with `labels_all=[label]`, and
with the concept's scenes as the filter (scored per search, and cached).
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench._common import DATABASE, INDEX_ROOT, MODEL
from index.filters import SceneFilter
from index.id_mask import IdMask
from index.stores import open_store
from service.settings import Settings
from service.storage.catalog import Catalog
from service.storage.concepts import ConceptStore
from service.storage.db import make_engine
from service.storage.migrate import upgrade
from service.usecases.local_search import open_index_only
from service.usecases.saved_concepts import (
    ScoreCache,
    concept_allowed,
    concept_facet,
    save_concept,
)
from service.usecases.search import SearchQuery, search_scenes


def best_mean_ms(run: Callable[[], object], times: int, repeats: int) -> float:
    """The best over `repeats` of the mean milliseconds of `times` calls of `run`."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(times):
            run()
        best = min(best, (time.perf_counter() - started) / times)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="water")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="grn-concept-bench-") as work:
        copy = Path(work) / "grn.db"
        with sqlite3.connect(DATABASE) as source, sqlite3.connect(copy) as target:
            source.backup(target)  # the committed state, write-ahead log included
        engine = make_engine(f"sqlite:///{copy}")
        upgrade(engine)  # the concepts table
        settings = Settings(model_path=MODEL, index_root=INDEX_ROOT, device="cpu")
        store = open_store(settings.store)
        try:
            served = open_index_only(settings, store)
            catalog, concepts = Catalog(engine), ConceptStore(engine)
            table = catalog.table(served.model_version)
            carrying = table.allowed_ids(SceneFilter(labels_all=[args.label]))
            others = table.allowed_ids(SceneFilter(labels_none=[args.label]))
            positives, negatives = carrying[: args.shots].tolist(), others[: args.shots].tolist()
            started = time.perf_counter()
            concept = save_concept(served, catalog, concepts, "bench", positives, negatives)
            saved_ms = (time.perf_counter() - started) * 1000
            kept = concept_allowed(served, catalog, concepts, ["bench"])
            queries = table.ids[:: max(1, len(table.ids) // args.queries)][: args.queries]
            print(f"{len(table.ids)} scenes; concept '{args.label}' from {args.shots}+"
                  f"{args.shots} keeps {len(kept)} ({np.isin(kept, carrying).mean():.2f} "
                  f"carry the label); saved in {saved_ms:.1f} ms")  # fmt: skip

            cache = ScoreCache()

            def allowed() -> IdMask:
                return concept_allowed(served, catalog, concepts, ["bench"])

            def allowed_cached() -> IdMask:
                return concept_allowed(served, catalog, concepts, ["bench"], cache=cache)

            def searches(where: Callable[[], SceneFilter]) -> Callable[[], object]:
                return lambda: [
                    search_scenes(
                        served, catalog, SearchQuery(k=10, where=where()), scene_id=int(i)
                    )
                    for i in queries
                ]

            each = len(queries)
            runs: dict[str, tuple[Callable[[], object], int, int]] = {  # (run, times, ops)
                "concept_allowed (every scene scored)": (allowed, 20, 1),
                "concept_allowed (scores cached)": (allowed_cached, 20, 1),
                "concept_facet (GET /concepts/{name})": (
                    lambda: concept_facet(served, catalog, concepts, concept), 20, 1,
                ),
                "search by id, unfiltered (baseline)": (searches(SceneFilter), 1, each),
                "search by id, labels_all (baseline)": (
                    searches(lambda: SceneFilter(labels_all=[args.label])), 1, each,
                ),
                "search by id, concepts": (
                    searches(lambda: SceneFilter().allowing(allowed())), 1, each,
                ),
                "search by id, concepts (scores cached)": (
                    searches(lambda: SceneFilter().allowing(allowed_cached())), 1, each,
                ),
            }  # fmt: skip
            figures = {}
            for name, (run, times, ops) in runs.items():
                run()  # warm: the arrays, the live index, the filter's mask
                figures[name] = best_mean_ms(run, times, args.repeats) / ops
            for name, ms in figures.items():
                print(f"{name:>40}: {ms:8.3f} ms")
        finally:
            store.close()


if __name__ == "__main__":
    main()
