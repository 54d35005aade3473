"""Saved concepts as a use case: a concept taught by example scenes (`model.probe`, as
`service.usecases.concept` teaches one for a search) is kept by name (`ConceptStore`), then
scores every scene of the archive, filters searches and listings (`concept_allowed`), counts
its scenes like a label, is renamed, refined and deleted. The routes `/concepts` and
`grn concept` call these functions.

A saved probe reads the served vectors alone (the embeddings the index searches), not the
backbone descriptors a concept search blends in: every scene has them, the scenes added
through the API since the index version was built included, so a concept scores every scene
the same way, those added later too. Scores are computed when asked, from the served
vectors (no score is stored), and kept in a `ScoreCache` until the concept, the model, the
index version or the catalog changes.

A concept is fitted on one model's embeddings. When another model is served (a promotion,
or a reindex with another model version), the first use re-fits it from its saved examples
that the served index still holds, and saves it; when none of its positives is held any
more it is `stale`: listed as such, refused as a filter (`ConceptStaleError`) until refined
with positives of the current archive.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

import numpy as np

from index.id_mask import IdMask
from index.results import MAX_K
from index.stores import ModelIndex, ServedIndex
from model import rerank as descriptor_rerank
from model.probe import Probe, fit_probe
from service.storage.catalog import Catalog
from service.storage.concepts import ConceptStore, StoredConcept
from service.storage.scene_table import SceneTable
from service.usecases.concept import (
    ConceptPage,
    ConceptQuery,
    Scored,
    background_ids,
    check_held,
    checked_examples,
    concept_search,
    ranked_page,
)
from service.usecases.search import store_filter

THRESHOLD = 0.5
"""A scene shows a saved concept when its probe scores it at least this (about 1: like the
positives, about 0: not), unless the concept or the filter says otherwise."""
NAME = re.compile(r"^\w[\w .-]{0,99}$")
"""A concept's name: letters, digits, `_`, and after the first character also spaces, `.`
and `-`, up to 100 characters (no comma: filters list names separated by commas)."""
CHUNK = 65536
"""Scenes scored per step (memory holds one chunk of vectors)."""
T = TypeVar("T")


class ConceptNameError(ValueError):
    """A concept name that cannot be used."""


class ConceptStaleError(RuntimeError):
    """A saved concept that the served model cannot score: fitted with another model, and
    none of its positives is in the served index to re-fit it from."""


@dataclass(frozen=True)
class ConceptChange:
    """What a refinement changes: each field None (or empty) leaves that part as it is."""

    name: str | None = None
    """A new name."""
    add_positives: Sequence[int] = ()
    add_negatives: Sequence[int] = ()
    remove: Sequence[int] = ()
    """Scenes no longer judged either way."""
    threshold: float | None = None


@dataclass(frozen=True)
class ConceptFacet:
    """A saved concept with what it finds in the archive now."""

    concept: StoredConcept
    stale: bool
    """Fitted with another model and not re-fitted (none of its positives is indexed)."""
    count: int | None
    """Scenes it scores at or above its threshold (None when stale)."""
    scenes: int
    """Scenes it scored: the served archive."""


def checked_name(name: str) -> str:
    """`name` stripped, or `ConceptNameError` saying what a name may hold."""
    name = name.strip()
    if not NAME.match(name):
        raise ConceptNameError(
            f"{name!r} cannot name a concept: use letters, digits, spaces, '_', '.' and '-' "
            "(no comma), starting with a letter or digit, at most 100 characters"
        )
    return name


def fitted(index: ServedIndex, model_version: str, concept: StoredConcept) -> StoredConcept:
    """`concept` with a probe fitted on `index`'s vectors from its positives and negatives
    (all of them held by `index`) and a background of archive scenes (as a concept search
    draws it)."""
    positives, negatives = list(concept.positives), list(concept.negatives)
    background = background_ids(index, positives, negatives)
    p, n = len(positives), len(negatives)
    rows = index.vectors(np.asarray([*positives, *negatives, *background], dtype=np.int64))
    probe = fit_probe(rows[:p], rows[p : p + n], rows[p + n :])
    return replace(
        concept, model_version=model_version, index_version=index.version,
        weights=probe.weights, bias=probe.bias,
    )  # fmt: skip


def _live(snapshot: ModelIndex, catalog: Catalog) -> ServedIndex:
    return catalog.live(snapshot.searcher, catalog.table(snapshot.model_version))


def _taught(snapshot: ModelIndex, catalog: Catalog, concept: StoredConcept) -> StoredConcept:
    """`concept`'s examples checked (`ConceptError`, `UnknownSceneError`) and fitted on the
    served index."""
    positives, negatives = checked_examples(concept.positives, concept.negatives)
    index = _live(snapshot, catalog)
    check_held(index, [*positives, *negatives])
    judged = replace(concept, positives=tuple(positives), negatives=tuple(negatives))
    return fitted(index, snapshot.model_version, judged)


def save_concept(
    snapshot: ModelIndex,
    catalog: Catalog,
    store: ConceptStore,
    name: str,
    positives: Sequence[int],
    negatives: Sequence[int] = (),
    threshold: float = THRESHOLD,
) -> StoredConcept:
    """Teach a concept by its examples and save it as `name` (`ConceptExistsError` when
    the name is taken)."""
    new = StoredConcept(
        name=checked_name(name), positives=tuple(positives), negatives=tuple(negatives),
        threshold=threshold, model_version="", index_version="",
        weights=np.zeros(0, np.float32), bias=0.0,
    )  # fmt: skip
    store.check_free(new.name)  # a taken name is a 409 whatever the examples
    return store.add(_taught(snapshot, catalog, new))


def refine_concept(
    snapshot: ModelIndex,
    catalog: Catalog,
    store: ConceptStore,
    name: str,
    change: ConceptChange,
) -> StoredConcept:
    """The concept `name` renamed, its examples changed (added ones judged the way given,
    a scene moved from one side to the other when given for it), its threshold set, and
    re-fitted on the served model when its examples changed or it was fitted with another."""
    old = store.get(name)
    if change.name is not None and checked_name(change.name) != old.name:
        store.check_free(checked_name(change.name))
    index = _live(snapshot, catalog)
    kept = _held(index, old)  # scenes removed from the archive since go
    removed = {*change.remove, *change.add_positives, *change.add_negatives}
    positives = [i for i in kept.positives if i not in removed] + list(change.add_positives)
    negatives = [i for i in kept.negatives if i not in removed] + list(change.add_negatives)
    new = replace(
        old,
        name=old.name if change.name is None else checked_name(change.name),
        positives=tuple(dict.fromkeys(positives)),
        negatives=tuple(dict.fromkeys(negatives)),
        threshold=old.threshold if change.threshold is None else change.threshold,
    )
    examples = (new.positives, new.negatives) != (old.positives, old.negatives)
    if examples or old.model_version != snapshot.model_version:
        new = _taught(snapshot, catalog, new)
    return store.update(name, new)


def _held(index: ServedIndex, concept: StoredConcept) -> StoredConcept:
    """`concept` with only the examples `index` holds."""
    p = len(concept.positives)
    ids = np.asarray([*concept.positives, *concept.negatives], dtype=np.int64)
    held = index.contains(ids) if len(ids) else np.zeros(0, bool)
    return replace(
        concept,
        positives=tuple(i for i, h in zip(concept.positives, held[:p], strict=True) if h),
        negatives=tuple(i for i, h in zip(concept.negatives, held[p:], strict=True) if h),
    )


def current_concept(
    snapshot: ModelIndex, catalog: Catalog, store: ConceptStore, concept: StoredConcept
) -> StoredConcept:
    """`concept` as the served model scores it: as saved when fitted with that model, else
    re-fitted from its examples the served index holds (and saved so); `ConceptStaleError`
    when it holds none of its positives."""
    if concept.model_version == snapshot.model_version:
        return concept
    index = _live(snapshot, catalog)
    kept = _held(index, concept)
    if not kept.positives:
        raise ConceptStaleError(
            f"concept {concept.name!r} was fitted with model {concept.model_version}, and none "
            f"of its positives is in the index of the served model {snapshot.model_version} "
            "to re-fit it from: refine it with positives of the current archive"
        )
    return store.update(concept.name, fitted(index, snapshot.model_version, kept))


class ScoreCache:
    """The scores of the saved concepts used last, and the masks of the scenes they keep
    (at most `size` entries), each as of one concept version, model, index version and
    catalog generation: a filter or a count repeated with nothing changed reads them, not
    every served vector again (a FAISS Flat index gives its 2100 UCM vectors back in about
    26 ms on this project's 2-core machine)."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._kept: OrderedDict[tuple[object, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...], compute: Callable[[], T]) -> T:
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
                return cast(T, found)
        made = compute()  # outside the lock: two threads may both compute, either will do
        with self._lock:
            self._kept[key] = made
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return made


def _scores_key(
    concept: StoredConcept, index: ServedIndex, table: SceneTable
) -> tuple[object, ...]:
    """What a concept's scores depend on: its version, the model, the index version and
    the catalog's generation."""
    return (concept.name, concept.updated, concept.model_version, index.version, table.generation)


def concept_scores(
    snapshot: ModelIndex,
    catalog: Catalog,
    concept: StoredConcept,
    cache: ScoreCache | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every served scene's id (sorted) and the score `concept` (fitted with the served
    model: `current_concept`) gives it, a chunk of CHUNK vectors at a time; from `cache`
    when it holds them as of now."""
    table = catalog.table(snapshot.model_version)
    index = catalog.live(snapshot.searcher, table)

    def scored() -> tuple[np.ndarray, np.ndarray]:
        ids = index.held_ids()
        scores = np.empty(len(ids), dtype=np.float32)
        for start in range(0, len(ids), CHUNK):
            part = ids[start : start + CHUNK]
            scores[start : start + len(part)] = index.vectors(part) @ concept.weights + concept.bias
        return ids, scores

    return scored() if cache is None else cache.get(_scores_key(concept, index, table), scored)


def concept_mask(
    snapshot: ModelIndex,
    catalog: Catalog,
    concept: StoredConcept,
    floor: float,
    cache: ScoreCache | None = None,
) -> IdMask:
    """The scenes `concept` scores at or above `floor`, as a mask over the catalog's ids
    (the universe a label filter's mask has: a store searches it in place, without listing
    its ids or building a selector from them); from `cache` when it holds it as of now."""
    table = catalog.table(snapshot.model_version)

    def masked() -> IdMask:
        ids, scores = concept_scores(snapshot, catalog, concept, cache)
        keep = np.zeros(len(table.ids), dtype=bool)
        rows = table.positions(ids[scores >= floor])
        keep[rows[rows >= 0]] = True
        keep.flags.writeable = False  # shared by the searches that read it from the cache
        return IdMask(table.ids, keep)

    if cache is None:
        return masked()
    index = catalog.live(snapshot.searcher, table)
    return cache.get((*_scores_key(concept, index, table), "mask", floor), masked)


def concept_allowed(
    snapshot: ModelIndex,
    catalog: Catalog,
    store: ConceptStore,
    names: Iterable[str],
    min_score: float | None = None,
    cache: ScoreCache | None = None,
) -> IdMask:
    """The scenes every concept of `names` scores at or above `min_score` (default: each
    concept's own threshold), as a mask over the catalog's ids: a filter's allow-list
    (`np.asarray` lists their ids, sorted). `ConceptNotFoundError` for an unknown name,
    `ConceptStaleError` for a stale one."""
    allowed: IdMask | None = None
    for name in dict.fromkeys(names):
        concept = current_concept(snapshot, catalog, store, store.get(name))
        floor = concept.threshold if min_score is None else min_score
        found = concept_mask(snapshot, catalog, concept, floor, cache)
        allowed = found if allowed is None else allowed.meeting(found)
    if allowed is None:
        table = catalog.table(snapshot.model_version)
        return IdMask(table.ids, np.zeros(len(table.ids), dtype=bool))
    return allowed


def concept_facet(
    snapshot: ModelIndex,
    catalog: Catalog,
    store: ConceptStore,
    concept: StoredConcept,
    cache: ScoreCache | None = None,
) -> ConceptFacet:
    """`concept` (re-fitted first when another model is served) with how many scenes it
    finds now; stale when it cannot be re-fitted."""
    try:
        concept = current_concept(snapshot, catalog, store, concept)
    except ConceptStaleError:
        scenes = int(_live(snapshot, catalog).count)
        return ConceptFacet(concept, stale=True, count=None, scenes=scenes)
    _, scores = concept_scores(snapshot, catalog, concept, cache)
    count = int((scores >= concept.threshold).sum())
    return ConceptFacet(concept, stale=False, count=count, scenes=len(scores))


def concept_facets(
    snapshot: ModelIndex, catalog: Catalog, store: ConceptStore, cache: ScoreCache | None = None
) -> list[ConceptFacet]:
    """Every saved concept, by name, with what it finds now (`concept_facet`)."""
    return [concept_facet(snapshot, catalog, store, c, cache) for c in store.all()]


def saved_concept_search(
    snapshot: ModelIndex,
    catalog: Catalog,
    store: ConceptStore,
    query: ConceptQuery,
) -> ConceptPage:
    """The archive ranked by the saved concept `query.concept` (re-fitted first when another
    model is served; `ConceptStaleError` when it cannot be): the index gathers the MAX_K
    scenes nearest the probe's direction that pass `query.where` (the probe is linear on the
    served vectors, so with an exact index these are its best-scoring scenes), the probe
    scores them exactly, best first, with the scores its filter and count use. Its examples
    are left out of the hits, as a concept search leaves out the judged scenes."""
    assert query.concept is not None
    concept = current_concept(snapshot, catalog, store, store.get(query.concept))
    table = catalog.table(snapshot.model_version)
    index = catalog.live(snapshot.searcher, table)
    judged = [*concept.positives, *concept.negatives]
    where = store_filter(index, table, query.where.excluding(*judged))
    probe = Probe(concept.weights, concept.bias)
    found = index.search(probe.direction[None], MAX_K, where)
    candidates = np.unique(found.ids[found.ids >= 0]).astype(np.int64)
    scores = probe.scores(index.vectors(candidates)) if len(candidates) else np.zeros(0)
    scored = Scored(candidates, scores, concept.positives, concept.negatives)
    return ranked_page(snapshot, index, table, query, scored, descriptors=False)


def concept_ranking(
    snapshot: ModelIndex,
    catalog: Catalog,
    store: ConceptStore,
    query: ConceptQuery,
    *,
    weight: float = descriptor_rerank.WEIGHT,
) -> ConceptPage:
    """`POST /search/concept`'s answer: the archive ranked by the saved concept the query
    names, or by a probe taught with its examples (`concept_search`; `weight`: the
    embedding's share of the features)."""
    if query.concept is not None:
        return saved_concept_search(snapshot, catalog, store, query)
    return concept_search(snapshot, catalog, query, weight=weight)
