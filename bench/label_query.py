"""How well a query by labels ranks the archive, by how much weight the classifier's
probabilities get against the labels' region of the embedding space, in one run.

    python -m bench.label_query            # the service's settings (make run's by default)

Queries: every label set that a test scene of the archive carries, asked as `labels_all`,
among the test split's scenes (the classifier was trained on the rest, so its
probabilities of those are no evidence). Two settings:

- filtered, as the service answers: only scenes whose stored labels carry the set pass;
  the ranking decides which come first. Gain of a hit: the Jaccard similarity of its label
  set to the query's (a scene with exactly those labels is the best example of them).
  Printed: nDCG@10 and the share of the top 10 with exactly the query's labels.
- unfiltered, as for an archive whose labels are not stored: the ranking alone must find
  the scenes. Printed: precision@10, the share of the top 10 that carry every label.

Weight 0 is the region alone (what a query by labels did before the probabilities were
kept); `service.usecases.search.LABEL_WEIGHT` is the weight the service uses.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Set

import numpy as np

from index.filters import SceneFilter
from service.runtime import Runtime
from service.settings import get_settings
from service.storage.catalog import Catalog
from service.storage.db import make_engine
from service.usecases.search import LABEL_POOL, LABEL_WEIGHT, label_match, label_region, rank

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
K = 10


def ndcg(gains: list[float], ideal: list[float]) -> float:
    discount = 1 / np.log2(np.arange(2, K + 2))
    best = float(
        np.sum(np.asarray(sorted(ideal, reverse=True)[:K]) * discount[: min(K, len(ideal))])
    )
    got = float(np.sum(np.asarray(gains[:K]) * discount[: len(gains[:K])]))
    return got / best if best > 0 else 0.0


def jaccard(a: Set[str], b: Set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    settings = get_settings()
    runtime = Runtime(settings)
    if not runtime.refresh():
        raise SystemExit(f"nothing to search: {runtime.problem}")
    snapshot = runtime.current()
    catalog = Catalog(make_engine(settings.database.database_url))
    table = catalog.table()
    index = snapshot.searcher
    tested = SceneFilter(split=args.split)
    test_ids = catalog.allowed_ids(tested)
    scenes = catalog.scenes(test_ids.tolist())
    labels_of = {i: {label.name for label in s.labels} for i, s in scenes.items()}
    sets = Counter(frozenset(v) for v in labels_of.values() if v)
    if index.probabilities(np.asarray(test_ids[:1])) is None:
        raise SystemExit(f"index {index.version} keeps no probabilities: run a full reindex")

    figures: dict[str, dict[str, float]] = {
        str(w): dict.fromkeys(("ndcg@10", "exact@10", "precision@10"), 0.0) for w in WEIGHTS
    }
    for wanted in sets:
        names = sorted(wanted)
        region = label_region(index, table, names)
        if region is None:
            continue
        for mode, where in (
            ("filtered", SceneFilter(labels_all=names, split=args.split)),
            ("unfiltered", tested),
        ):
            pool = rank(index, table, region, LABEL_POOL, where)
            ids = [hit.scene.id for hit in pool]
            match = label_match(snapshot, ids, SceneFilter(labels_all=names))
            assert match is not None
            similarity = (np.asarray([hit.score for hit in pool]) + 1) / 2
            ideal = [jaccard(wanted, labels_of[i]) for i in ids]
            for weight in WEIGHTS:
                scores = weight * match + (1 - weight) * similarity
                top = [ids[i] for i in np.lexsort((-similarity, -scores))[:K]]
                row = figures[str(weight)]
                if mode == "filtered":
                    row["ndcg@10"] += ndcg([jaccard(wanted, labels_of[i]) for i in top], ideal)
                    row["exact@10"] += float(np.mean([labels_of[i] == wanted for i in top]))
                else:
                    row["precision@10"] += float(np.mean([wanted <= labels_of[i] for i in top]))
    count = len(sets)
    table = {w: {name: v / count for name, v in row.items()} for w, row in figures.items()}
    if args.json:
        print(json.dumps({"label_sets": count, "figures": table}, indent=2))
        return
    print(f"{count} label sets of the {args.split} split, {len(test_ids)} scenes; "
          f"model {snapshot.model_version}, index {index.version}")  # fmt: skip
    print(f"{'weight':>8} {'filtered nDCG@10':>17} {'exact@10':>9} {'unfiltered P@10':>16}")
    for shown, averages in table.items():
        mark = "  <- service" if float(shown) == LABEL_WEIGHT else ""
        print(
            f"{shown:>8} {averages['ndcg@10']:>17.3f} {averages['exact@10']:>9.3f} "
            f"{averages['precision@10']:>16.3f}{mark}"
        )


if __name__ == "__main__":
    main()
