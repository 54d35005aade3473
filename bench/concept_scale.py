"""What concept search costs at archive scale (issue 38 item 1: interactive at a million
scenes, at most 1 s a round at 100k). For each size, a synthetic archive (`grn synth`, kept
under `--work` as bench.scale keeps them) imported with `grn import --bulk` into a fresh
SQLite database, then in this process over the imported index version:

- a round of concept search by examples (`POST /search/concept`'s use case: the probe
  fitted on `--shots` scenes of `--label` and as many without it, 500 background scenes,
  the candidates gathered and scored; k = 50), unfiltered and with `labels_none` of another
  label;
- the archive ranked by the saved concept (`concept` in the request: the index gathers
  MAX_K scenes by the probe's direction, the probe scores them), and its recall@50 against
  every scene scored exactly;
- the saved concept as a filter: every served scene scored (its first use after a change),
  the same from the service's ScoreCache, its count (`GET /concepts`), and a search by
  scene id, k = 10, filtered by it (cached) against the same search unfiltered (baseline).

    python -m bench.concept_scale --sizes 10000 100000 1000000 [--work /tmp/grn-scale]

Each figure is the best of `--repeats` mean milliseconds (bench.concept_filter.best_mean_ms).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import MODEL, checked_grn, invocation, report_each
from bench.bulk_import import workspace
from bench.concept_filter import best_mean_ms
from bench.scale import archive, service_env

HEADER = (
    "| scenes | round by examples ms (unfiltered / labels_none) | candidates | ranked by the "
    "saved concept ms | recall@50 | filter: every scene scored / cached ms | count ms | "
    "search by id, unfiltered / concept filter ms | load 1-min before / after |\n"
    + "| ---: " * 9
    + "|"
)


def measure(folder: Path, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of one size."""
    url, drop, scratch = workspace("sqlite", "", args.work, f"grn_concept_{size}")
    env = service_env(url, args.model, scratch)
    out: dict[str, Any] = {"scenes": size, "load_before": os.getloadavg()}
    try:
        checked_grn("db", "upgrade", env=env)
        seconds, _ = checked_grn("import", str(folder), "--bulk", "--quiet", env=env)
        out["import_s"] = round(seconds, 1)
        os.environ.update(env)  # the settings of the imported archive, for Settings()
        out |= timed(args)
    finally:
        drop()
        shutil.rmtree(scratch, ignore_errors=True)
    out["load_after"] = os.getloadavg()
    return out


def timed(args: argparse.Namespace) -> dict[str, Any]:
    """The figures, in this process, over the archive the environment's settings name."""
    from index.filters import SceneFilter
    from index.stores import open_store
    from service.settings import Settings
    from service.storage.catalog import Catalog
    from service.storage.concepts import ConceptStore
    from service.storage.db import make_engine
    from service.usecases.concept import ConceptQuery, concept_search
    from service.usecases.local_search import open_index_only
    from service.usecases.saved_concepts import (
        ScoreCache,
        concept_allowed,
        concept_facet,
        concept_scores,
        save_concept,
        saved_concept_search,
    )
    from service.usecases.search import SearchQuery, search_scenes

    settings = Settings()
    store = open_store(settings.store)
    engine = make_engine(settings.database.database_url)
    try:
        served = open_index_only(settings, store)
        catalog, concepts = Catalog(engine), ConceptStore(engine)
        table = catalog.table(served.model_version)
        rng = np.random.default_rng(0)
        carrying = table.allowed_ids(SceneFilter(labels_all=[args.label]))
        others = table.allowed_ids(SceneFilter(labels_none=[args.label]))
        positives = rng.choice(carrying, args.shots, replace=False).tolist()
        negatives = rng.choice(others, args.shots, replace=False).tolist()
        round_query = ConceptQuery(positives, negatives, k=50)
        filtered = ConceptQuery(
            positives, negatives, k=50, where=SceneFilter(labels_none=[args.other])
        )
        concept = save_concept(served, catalog, concepts, "bench", positives, negatives)
        ranked_query = ConceptQuery((), k=50, concept="bench")
        ids, scores = concept_scores(served, catalog, concept)
        judged = np.isin(ids, [*positives, *negatives])
        exact = set(ids[~judged][np.argsort(-scores[~judged], kind="stable")[:50]].tolist())
        ranked = saved_concept_search(served, catalog, concepts, ranked_query)
        found = {hit.scene.id for hit in ranked.hits}
        cache = ScoreCache()
        queries = rng.choice(table.ids, args.queries, replace=False)

        def searches(where: Any) -> Any:
            return lambda: [
                search_scenes(served, catalog, SearchQuery(k=10, where=where()), scene_id=int(i))
                for i in queries
            ]

        def cached() -> Any:
            return concept_allowed(served, catalog, concepts, ["bench"], cache=cache)

        runs: dict[str, tuple[Any, int, int]] = {  # (run, calls per repeat, operations a call)
            "round": (lambda: concept_search(served, catalog, round_query), 3, 1),
            "round_filtered": (lambda: concept_search(served, catalog, filtered), 3, 1),
            "ranked_by_saved": (
                lambda: saved_concept_search(served, catalog, concepts, ranked_query), 3, 1,
            ),
            "filter_scored": (
                lambda: concept_allowed(served, catalog, concepts, ["bench"]), 3, 1,
            ),
            "filter_cached": (cached, 10, 1),
            "count": (lambda: concept_facet(served, catalog, concepts, concept, cache), 10, 1),
            "search_unfiltered": (searches(SceneFilter), 1, len(queries)),
            "search_concept_filter": (
                searches(lambda: SceneFilter().allowing(cached())), 1, len(queries),
            ),
        }  # fmt: skip
        out: dict[str, Any] = {
            "candidates": concept_search(served, catalog, round_query).candidates,
            "recall_at_50": len(found & exact) / max(1, len(exact)),
            "kept": len(cached()),
        }
        for name, (run, calls, ops) in runs.items():
            run()  # warm: the arrays, the live index, the filter's mask
            out[f"{name}_ms"] = round(best_mean_ms(run, calls, args.repeats) / ops, 2)
        return out
    finally:
        store.close()
        engine.dispose()


def row(result: dict[str, Any]) -> str:
    """One line of the table."""
    cells = [
        f"{result['scenes']:,}", f"{result['round_ms']:.0f} / {result['round_filtered_ms']:.0f}",
        f"{result['candidates']:,}", f"{result['ranked_by_saved_ms']:.1f}",
        f"{result['recall_at_50']:.2f}",
        f"{result['filter_scored_ms']:.0f} / {result['filter_cached_ms']:.1f}",
        f"{result['count_ms']:.1f}",
        f"{result['search_unfiltered_ms']:.1f} / {result['search_concept_filter_ms']:.1f}",
        "{:.1f} / {:.1f}".format(result["load_before"][0], result["load_after"][0]),
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--label", default="water")
    parser.add_argument("--other", default="buildings", help="The labels_none of a round.")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--work", type=Path, default=Path("/tmp/grn-scale"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"command": invocation(), "cores": os.cpu_count(), "results": []}
    print(HEADER, flush=True)
    sizes = sorted(args.sizes)
    measured = (measure(archive(args.work, size, args.model)[0], size, args) for size in sizes)
    report_each(report, measured, row, args.out)


if __name__ == "__main__":
    main()
