"""Few-shot concept search as a use case: scenes that show a concept (positives) and,
optionally, scenes that do not (negatives) teach a linear probe (`model.probe`) on the served
descriptors (the GRN embedding and the backbone descriptor, blended as the re-rank blends
them); the probe ranks the archive. The route `POST /search/concept` and `grn concept` call
`concept_search`.

Interactive at any archive size: the index gathers candidates (the nearest scenes of each
positive and of their mean, `CANDIDATES` in all at most, every filter applied by the store
or the catalog as for `/search`), and only those are scored by the probe; the answer says
how many were. A sample of `BACKGROUND` archive scenes stands for "anything else" in the
fit. Judged scenes (positives and negatives) are left out of the hits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from index.filters import SceneFilter
from index.results import MAX_K
from index.stores import ModelIndex, ServedIndex, UnknownSceneError
from model import rerank as descriptor_rerank
from model.probe import fit_probe, probe_features
from service.storage.catalog import Catalog
from service.storage.scene_table import SceneTable
from service.usecases.search import RankedPage, page_fields, store_filter, with_metadata

CANDIDATES = 4000
"""At most this many candidates gathered by the index (per query: this over the positives
plus one, at least k, at most MAX_K)."""
BACKGROUND = 500
"""Archive scenes drawn (seeded by the positives) as the fit's background."""
MAX_EXAMPLES = 100
"""At most this many positives, and as many negatives."""


class ConceptError(ValueError):
    """A concept search that cannot be fitted: no positives, too many, or a scene judged
    both ways."""


@dataclass(frozen=True)
class ConceptQuery:
    positives: Sequence[int]
    negatives: Sequence[int] = ()
    k: int = 10
    where: SceneFilter = field(default_factory=SceneFilter)
    min_score: float | None = None
    """Hits the probe scores lower are dropped."""
    offset: int = 0
    limit: int | None = None
    """Hits per page (None: all k)."""
    concept: str | None = None
    """A saved concept to rank by instead of `positives` and `negatives`
    (`service.usecases.saved_concepts.saved_concept_search`)."""


@dataclass(frozen=True)
class ConceptPage(RankedPage):
    """One page of the concept's hits, with how they were found."""

    candidates: int = 0
    """Scenes the index gathered and the probe scored."""
    descriptors: bool = False
    """The probe used the backbone descriptors beside the embedding."""
    positives: tuple[int, ...] = ()
    """The scenes the probe learned the concept from."""
    negatives: tuple[int, ...] = ()
    """The scenes it learned the concept is not."""


def concept_search(
    snapshot: ModelIndex,
    catalog: Catalog,
    query: ConceptQuery,
    *,
    table: SceneTable | None = None,
    weight: float = descriptor_rerank.WEIGHT,
) -> ConceptPage:
    """The page `query` asks for of the scenes the concept's probe scores highest among the
    candidates the index gathers (filters applied), best first; `weight`: the embedding's
    share of the blended features (the re-rank's, GRN_BACKBONE_RERANK_WEIGHT)."""
    positives, negatives = checked_examples(query.positives, query.negatives)
    if table is None or table.written.model_version != snapshot.model_version:
        table = catalog.table(snapshot.model_version)
    index = catalog.live(snapshot.searcher, table)
    check_held(index, [*positives, *negatives])
    where = store_filter(index, table, query.where.excluding(*positives, *negatives))
    candidates = gathered(index, index.vectors(positives), query.k, where)
    background = background_ids(index, positives, negatives)
    judged = np.asarray([*positives, *negatives, *background, *candidates], dtype=np.int64)
    features, described = served_features(index, judged, weight)
    p, n, b = len(positives), len(negatives), len(background)
    probe = fit_probe(features[:p], features[p : p + n], features[p + n : p + n + b])
    scored = Scored(candidates, probe.scores(features[p + n + b :]), positives, negatives)
    return ranked_page(snapshot, index, table, query, scored, descriptors=described)


@dataclass(frozen=True)
class Scored:
    """The candidates a probe scored, and the examples it learned from."""

    candidates: np.ndarray
    scores: np.ndarray
    positives: Sequence[int]
    negatives: Sequence[int]


def ranked_page(
    snapshot: ModelIndex,
    index: ServedIndex,
    table: SceneTable,
    query: ConceptQuery,
    scored: Scored,
    *,
    descriptors: bool,
) -> ConceptPage:
    """The page `query` asks for of the `scored` candidates, best first (k of them, none
    under `query.min_score`), with their rows."""
    scores, candidates = scored.scores, scored.candidates
    order = np.argsort(-scores, kind="stable")[: query.k]
    ranked = [
        (int(candidates[i]), float(scores[i]))
        for i in order
        if query.min_score is None or scores[i] >= query.min_score
    ]
    hits = with_metadata(index, table, ranked)
    return ConceptPage(
        candidates=len(candidates),
        descriptors=descriptors,
        positives=tuple(scored.positives),
        negatives=tuple(scored.negatives),
        **page_fields(snapshot, hits, query.offset, query.limit or query.k),
    )


def checked_examples(
    positives: Sequence[int], negatives: Sequence[int]
) -> tuple[list[int], list[int]]:
    """The examples without repeats; `ConceptError` for none, too many, or a scene given
    both ways."""
    positives = list(dict.fromkeys(int(i) for i in positives))
    negatives = list(dict.fromkeys(int(i) for i in negatives))
    if not positives:
        raise ConceptError("a concept needs at least one positive scene: give its id")
    if len(positives) > MAX_EXAMPLES or len(negatives) > MAX_EXAMPLES:
        raise ConceptError(f"at most {MAX_EXAMPLES} positives and {MAX_EXAMPLES} negatives")
    both = sorted(set(positives) & set(negatives))
    if both:
        raise ConceptError(f"scene {both[0]} is given as both a positive and a negative")
    return positives, negatives


def check_held(index: ServedIndex, ids: list[int]) -> None:
    """`UnknownSceneError` naming the first of `ids` the index does not hold."""
    held = index.contains(np.asarray(ids, dtype=np.int64))
    if not held.all():
        missing = ids[int(np.flatnonzero(~held)[0])]
        raise UnknownSceneError(
            f"scene {missing} is not in the index: give ids of indexed scenes (from /scenes "
            "or from hits)"
        )


def gathered(index: ServedIndex, positives: np.ndarray, k: int, where: SceneFilter) -> np.ndarray:
    """The candidates: the nearest scenes passing `where` of each positive and of their mean
    (unit), CANDIDATES in all at most, sorted unique ids."""
    mean = positives.mean(axis=0)
    mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
    queries = np.vstack([positives, mean[None]]).astype(np.float32)
    per_query = min(MAX_K, max(k, CANDIDATES // len(queries)))
    result = index.search(queries, per_query, where)
    return np.unique(result.ids[result.ids >= 0]).astype(np.int64)


def background_ids(index: ServedIndex, positives: list[int], negatives: list[int]) -> np.ndarray:
    """BACKGROUND held scenes drawn evenly at random (seeded by the positives, so a search
    repeats), the judged ones left out."""
    held = index.held_ids()
    held = held[~np.isin(held, [*positives, *negatives])]
    if len(held) <= BACKGROUND:
        return held.astype(np.int64)
    rng = np.random.default_rng(sorted(positives))
    return np.sort(rng.choice(held, size=BACKGROUND, replace=False)).astype(np.int64)


def served_features(index: ServedIndex, ids: np.ndarray, weight: float) -> tuple[np.ndarray, bool]:
    """The probe's features of `ids` (`model.probe.probe_features`) and whether they include
    the backbone descriptors (not when the version keeps none, or a scene added since has
    none)."""
    descriptors = index.descriptors(ids) if len(ids) else None
    return probe_features(index.vectors(ids), descriptors, weight), descriptors is not None
