"""Search as a use case: a query vector or an archive scene in, ranked scenes with their
metadata out. The HTTP route, `grn search` and the tests call `search_scenes`.

A query by labels alone ("airplane and pavement, not buildings"; a scene folder may stand
beside or instead of them) searches from the centre of the labels' region of the embedding
space and re-ranks the scenes found there by the classifier's probability that each meets the
label conditions (`LABEL_WEIGHT`), where the
index version keeps the probabilities; equal probabilities go by closeness to the region.

Filters: the store evaluates the conditions it can (`ServedIndex.native_filters`); a filter
that uses any other condition is resolved into an id allow-list first (in the catalog's
arrays, `service.storage.scene_table`), so a filtered search returns k hits whenever k scenes match.
Hits take their name, folder and labels from the same arrays. Searching by an archive scene
leaves the scene itself out unless `include_query`.

Re-ranking (`Rerank`, GRN_BACKBONE_RERANK): a search by an image, a scene or scenes to be like
takes the index's `pool` nearest and orders them by the blend of the GRN cosine and the
backbone descriptors' cosine (`model.rerank`), where the index version keeps descriptors and
the mode says so (`auto`: content the model did not train on). The hits' scores are then the
blended scores, and `min_score` applies to them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from index.filters import SceneFilter
from index.results import MAX_K
from index.stores import ModelIndex, ServedIndex
from model import rerank as descriptor_rerank
from model.times import utc
from service.settings import Settings
from service.storage.catalog import Catalog
from service.storage.scene_table import SceneRow, SceneTable
from service.usecases.feedback import feedback_descriptor, feedback_vector

log = logging.getLogger("grn.search")


@dataclass(frozen=True)
class SearchQuery:
    k: int = 10
    where: SceneFilter = field(default_factory=SceneFilter)
    min_score: float | None = None
    """Hits scoring lower are dropped."""
    include_query: bool = False
    """Searching by an archive scene: keep the scene itself among the hits."""
    offset: int = 0
    limit: int | None = None
    """Hits per page (None: all k)."""
    more_like: Sequence[int] = ()
    """Relevance feedback: archive scenes the results should be like."""
    less_like: Sequence[int] = ()
    """Relevance feedback: archive scenes the results should not be like."""
    order: HitOrder = "score"
    """How the k hits are paged: best first, or by acquisition time (`in_order`)."""


HitOrder = Literal["score", "acquired", "-acquired"]


class RankedScene(NamedTuple):
    scene: SceneRow
    score: float


@dataclass(frozen=True)
class RankedPage:
    """One page of ranked hits, with the model and index version that answered."""

    model_version: str
    index_version: str
    hits: list[RankedScene]
    total: int
    """Hits over all pages (at most k)."""
    offset: int
    limit: int
    next_offset: int | None


def page_fields(
    snapshot: ModelIndex, ranked: list[RankedScene], offset: int, limit: int
) -> dict[str, Any]:
    """The fields of a `RankedPage`: `limit` hits of `ranked` from `offset` on."""
    page = ranked[offset : offset + limit]
    end = offset + len(page)
    return {
        "model_version": snapshot.model_version,
        "index_version": snapshot.index_version,
        "hits": page,
        "total": len(ranked),
        "offset": offset,
        "limit": limit,
        "next_offset": end if end < len(ranked) else None,
    }


SIMILARITY = "similarity"
"""Scores are cosine similarities to the query (-1 to 1), blended when re-ranked."""
LABEL_MATCH = "label_match"
"""Scores are the classifier's probabilities that the scene meets the label conditions (0 to
1): a query by labels, where the index keeps the probabilities (`rank_by_labels`)."""


@dataclass(frozen=True)
class SearchPage(RankedPage):
    """One page of the ranked hits, with what was searched: the query's scene (if any), and
    the model and index version that answered."""

    query_id: int | None = None
    reranked: bool = False
    """The hits were re-ranked with the backbone's descriptors (`Rerank`)."""
    score_kind: str = SIMILARITY
    """What the hits' scores are: SIMILARITY or LABEL_MATCH."""


@dataclass(frozen=True)
class Rerank:
    """How searches re-rank with the backbone's descriptors (`model.rerank`)."""

    mode: str = "auto"
    """auto (content the model did not train on), on, or off."""
    weight: float = descriptor_rerank.WEIGHT
    """The GRN cosine's share of the blended score."""
    pool: int = descriptor_rerank.POOL
    """The index's nearest scenes that are re-ranked (at least k)."""

    @classmethod
    def of(cls, settings: Settings) -> Rerank:
        return cls(
            settings.model.backbone_rerank,
            settings.model.backbone_rerank_weight,
            settings.model.backbone_rerank_pool,
        )


def search_scenes(
    snapshot: ModelIndex,
    catalog: Catalog,
    query: SearchQuery,
    *,
    vector: np.ndarray | None = None,
    scene_id: int | None = None,
    table: SceneTable | None = None,
    descriptor: np.ndarray | None = None,
    rerank: Rerank | None = None,
    region_of: int | None = None,
) -> SearchPage:
    """The page `query` asks for of the archive scenes most similar to `vector` (a unit
    embedding of the snapshot's model, with the image's backbone `descriptor`; of a region
    of the archive scene `region_of`, when given, which is then the page's query and left
    out as the scene itself would be) or to the archive scene `scene_id`, best first, moved
    towards `query.more_like` and away from `query.less_like` when given, re-ranked as
    `rerank` says (not at all when not given). Filters and hits' metadata come from `table`
    (the catalog's current arrays when not given)."""
    if vector is not None and scene_id is not None:
        raise ValueError("search by a vector or by a scene id, not both")
    if table is None or table.written.model_version != snapshot.model_version:
        table = catalog.table(snapshot.model_version)
    # the version in service, less the scenes removed and plus those added since
    index = catalog.live(snapshot.searcher, table)
    where = query.where
    by_labels = vector is None and scene_id is None and not query.more_like
    if by_labels:
        if not (where.labels_all or where.folder):
            raise ValueError(
                "search by a vector, a scene id, scenes to be like, labels or a scene folder"
            )
        vector = label_region(index, table, where.labels_all, folder=where.folder)
        if vector is None:  # no indexed scene carries them all (in the folder)
            return SearchPage(**page_fields(snapshot, [], query.offset, query.limit or query.k))
    reranking = not by_labels and rerank is not None and rerank.mode != "off"
    query_seen = None
    if scene_id is not None:
        vector = index.vectors([scene_id])[0]
        if reranking and rerank is not None:  # the scene decides; descriptor read if needed
            query_seen = index.seen([scene_id])
            found = (
                index.descriptors([scene_id])
                if descriptor_rerank.applies(rerank.mode, query_seen)
                else None
            )
            descriptor = None if found is None else found[0]
        if not query.include_query:
            where = where.excluding(scene_id)
    if region_of is not None and not query.include_query:
        where = where.excluding(region_of)
    if query.more_like or query.less_like:
        liked, disliked = list(query.more_like), list(query.less_like)
        if reranking and (descriptor is not None or vector is None):
            descriptor = feedback_descriptor(index, descriptor, liked, disliked)
        vector = feedback_vector(vector, index.vectors(liked), index.vectors(disliked))
        where = where.excluding(*query.more_like, *query.less_like)  # judged already
    assert vector is not None
    score_kind = SIMILARITY
    if by_labels:
        ranked, matched = rank_by_labels(snapshot, index, table, vector, query.k, where)
        ranked = [hit for hit in ranked if query.min_score is None or hit.score >= query.min_score]
        score_kind = LABEL_MATCH if matched else SIMILARITY
    else:
        blend = rerank if reranking and descriptor is not None else None
        if blend is not None and query_seen is not None:  # decided by the scene: no pool
            blend = blend if descriptor_rerank.applies(blend.mode, query_seen) else None
        ranked, reranking = ranked_search(
            index, table, vector, query.k, where, query.min_score, descriptor, blend, query_seen
        )
    return SearchPage(
        query_id=scene_id if region_of is None else region_of,
        reranked=reranking,
        score_kind=score_kind,
        **page_fields(
            snapshot, in_order(ranked, query.order), query.offset, query.limit or query.k
        ),
    )


def in_order(ranked: list[RankedScene], order: HitOrder) -> list[RankedScene]:
    """The top hits in `order`: as ranked (`score`), or by acquisition time, oldest
    (`acquired`) or newest (`-acquired`) first, those of unknown time last; hits of the same
    time keep their rank's order. The hits are the same k either way: only their order
    changes."""
    if order == "score":
        return ranked
    timed = [(utc(hit.scene.acquired), hit) for hit in ranked if hit.scene.acquired is not None]
    timed.sort(key=lambda pair: pair[0], reverse=order == "-acquired")  # stable either way
    return [hit for _, hit in timed] + [hit for hit in ranked if hit.scene.acquired is None]


LABEL_SAMPLE = 1000
"""At most this many scenes of a label set make its region's centre."""


def label_region(
    index: ServedIndex, table: SceneTable, labels: Sequence[str], *, folder: str | None = None
) -> np.ndarray | None:
    """The centre of the labels' region of the embedding space: the mean vector of the
    indexed scenes that carry all of them (and lie in `folder`, when given; a folder alone
    is its scenes' region) (an even sample of at most LABEL_SAMPLE, by id), on the unit
    sphere; None when no indexed scene carries them all."""
    ids = table.allowed_ids(SceneFilter(labels_all=labels, folder=folder))
    ids = ids[index.contains(ids)] if len(ids) else ids
    if not len(ids):
        return None
    if len(ids) > LABEL_SAMPLE:
        ids = ids[np.linspace(0, len(ids) - 1, LABEL_SAMPLE).astype(int)]
    centre = index.vectors(ids).mean(axis=0)
    return np.asarray(centre / max(float(np.linalg.norm(centre)), 1e-12), dtype=np.float32)


LABEL_POOL = 200
"""A query by labels re-ranks at least this many of the region's nearest scenes."""
LABEL_WEIGHT = 1.0
"""A query by labels scores a scene by LABEL_WEIGHT times the classifier's probability that
it meets the label conditions plus the rest times its similarity to the labels' region
(cosine mapped to 0..1); equal scores go by similarity. 1.0 ranked best of 0, 0.25, 0.5,
0.75, 0.9 and 1.0 on UCM's test split (docs/results.md, "Query by labels")."""


def rank_by_labels(
    snapshot: ModelIndex,
    index: ServedIndex,
    table: SceneTable,
    region: np.ndarray,
    k: int,
    where: SceneFilter,
) -> tuple[list[RankedScene], bool]:
    """The top k scenes of a query by labels: the region's nearest scenes (at least
    LABEL_POOL of them) re-ranked by the classifier's probabilities when the index keeps
    them (`LABEL_WEIGHT`), and True; by the region alone otherwise, and False."""
    pool = rank(index, table, region, min(MAX_K, max(k, LABEL_POOL)), where)
    ids = [hit.scene.id for hit in pool]
    match = label_match(snapshot, index, ids, where) if pool else None
    if match is None:
        return pool[:k], False
    similarity = (np.asarray([hit.score for hit in pool]) + 1) / 2
    scores = LABEL_WEIGHT * match + (1 - LABEL_WEIGHT) * similarity
    order = np.lexsort((-similarity, -scores))[:k]
    return [RankedScene(pool[i].scene, float(scores[i])) for i in order], True


def label_match(
    snapshot: ModelIndex, index: ServedIndex, ids: Sequence[int], where: SceneFilter
) -> np.ndarray | None:
    """The classifier's probability that each scene meets the label conditions of `where`,
    labels taken as independent; None when the index keeps no probabilities or the model
    does not know one of the labels, or there are no label conditions (a folder alone)."""
    if not where.label_names:
        return None
    column = {name: number for number, name in enumerate(snapshot.card.label_names)}
    if any(name not in column for name in where.label_names):
        return None
    probabilities = index.probabilities(ids)
    if probabilities is None or probabilities.shape[1] != len(column):
        return None
    match = np.ones(len(ids))
    for name in where.labels_all:
        match *= probabilities[:, column[name]]
    for name in where.labels_none:
        match *= 1 - probabilities[:, column[name]]
    if where.labels_any:
        absent = 1 - probabilities[:, [column[name] for name in where.labels_any]]
        match *= 1 - absent.prod(axis=1)
    return match


def rank(
    index: ServedIndex, table: SceneTable, vector: np.ndarray, k: int, where: SceneFilter
) -> list[RankedScene]:
    """The top k scenes for a query vector, filters applied, the catalog's metadata joined
    (filter and metadata from one table: one generation check per search)."""
    return ranked_search(index, table, vector, k, where)[0]


def store_filter(index: ServedIndex, table: SceneTable, where: SceneFilter) -> SceneFilter:
    """`where` as the store can search it: as given when it uses only the store's native
    conditions (its labels checked), else resolved by the catalog into an id mask."""
    if where.conditions() - index.native_filters:
        # the catalog resolves the filter (and refuses unknown labels) into a mask over its
        # ids, kept per filter; the store searches it without listing the ids
        return SceneFilter(allow_ids=table.allowed(where))
    if where.label_names:
        table.check_labels(where.label_names)  # the same 400 as an allow-list would give
    return where


def ranked_search(
    index: ServedIndex,
    table: SceneTable,
    vector: np.ndarray,
    k: int,
    where: SceneFilter,
    min_score: float | None = None,
    descriptor: np.ndarray | None = None,
    rerank: Rerank | None = None,
    query_seen: np.ndarray | None = None,
) -> tuple[list[RankedScene], bool]:
    """`rank`, with `rerank` the index's `rerank.pool` nearest re-ranked with the query's
    `descriptor`, and whether the hits were re-ranked: as `rerank.mode` says of the query
    (`model.rerank.applies`; `query_seen`: whether the query scene is seen content, else
    its nearest scenes tell), and not when a candidate has no descriptor (a scene added
    since the version was built)."""
    where = store_filter(index, table, where)
    fetch = k if rerank is None else min(MAX_K, max(k, rerank.pool))
    result = index.search(vector[None], fetch, where)
    found = result.ids[0] >= 0
    ids, scores = result.ids[0][found].astype(np.int64), result.scores[0][found]
    reranked = False
    if rerank is not None and descriptor is not None and len(ids):
        seen = (
            query_seen if query_seen is not None else index.seen(ids[: descriptor_rerank.NEAREST])
        )
        wanted = descriptor_rerank.applies(rerank.mode, seen)
        described = index.descriptors(ids) if wanted else None
        if described is not None:
            scores = descriptor_rerank.blended(scores, descriptor, described, rerank.weight)
            order = np.argsort(-scores, kind="stable")
            ids, scores, reranked = ids[order], scores[order], True
    ranked = [
        (int(i), float(s))
        for i, s in zip(ids[:k], scores[:k], strict=True)
        if min_score is None or s >= min_score
    ]
    return with_metadata(index, table, ranked), reranked


def with_metadata(
    index: ServedIndex, table: SceneTable, ranked: Sequence[tuple[int, float]]
) -> list[RankedScene]:
    """Ranked (id, score) pairs joined with the catalog's rows; ids SQL does not know are
    dropped (and logged)."""
    scenes = table.rows([i for i, _ in ranked])
    missing = [i for i, _ in ranked if i not in scenes]
    if missing:
        log.warning("index %s holds %d ids unknown to SQL", index.version, len(missing))
    return [RankedScene(scenes[i], s) for i, s in ranked if i in scenes]
