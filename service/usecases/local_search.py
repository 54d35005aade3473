"""Search in this process, from the model, vector store and SQL of the settings: what
`grn search` answers without --url, through the same `search_scenes` as POST /search.

The network is loaded only when an image must be embedded. A search by scene ids, scenes to
be like or labels reads the model card and the index version built by that model
(`index.stores.ModelIndex`), which takes a fraction of a second where loading the network
takes seconds; a text query loads the sentence encoder (`service.usecases.text`), not the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
from sqlalchemy import Engine

from index.stores import (
    IndexModelMismatchError,
    IndexNotReadyError,
    ModelIndex,
    VectorStore,
    VectorStoreUnavailableError,
    open_store,
)
from model.card import ModelFileError, read_card, resolve_model_path
from service.settings import Settings
from service.storage.catalog import Catalog
from service.storage.concepts import ConceptStore
from service.usecases import regions
from service.usecases.concept import ConceptPage, ConceptQuery
from service.usecases.saved_concepts import concept_allowed, concept_ranking
from service.usecases.search import Rerank, SearchPage, SearchQuery, search_scenes
from service.usecases.text import Understood

T = TypeVar("T")


class NothingToSearchError(RuntimeError):
    """No model, or no index built by it, to search with (says which, and what to run)."""


@dataclass(frozen=True)
class LocalAnswer:
    page: SearchPage
    understood: Understood | None = None
    """How `text` was read onto the labels, when it was given."""
    maps: list[regions.MatchMap] | None = None
    """Each hit's match map, when asked for (`service.usecases.regions`)."""


class ConceptFilter(NamedTuple):
    """The API's `concepts` filter: only scenes every saved concept named scores at or above
    `min_score` (None: each concept's threshold)."""

    names: tuple[str, ...]
    min_score: float | None = None


def open_index_only(settings: Settings, store: VectorStore) -> ModelIndex:
    """The settings' model card and the store's version in service, which that model must
    have built (as the service checks before it serves them)."""
    model_file = resolve_model_path(settings.model.model_path)
    card = read_card(model_file)
    current = store.current()
    if current is None:
        raise IndexNotReadyError(f"{store.describe_empty()}; run `{store.command('full')}`")
    if current.model_version != card.version:
        raise IndexModelMismatchError(
            f"the model file {model_file} holds {card.version}, but index {current.version} "
            f"was built by {current.model_version}; run `{store.command('replace')}` to build "
            "an index with this model"
        )
    return ModelIndex(card, store.open(current.version, card.version))


def search_here(
    settings: Settings,
    engine: Engine,
    query: SearchQuery,
    *,
    text: str | None = None,
    image: Path | None = None,
    scene_id: int | None = None,
    region: regions.Region | None = None,
    match_grid: int | None = None,
    concepts: ConceptFilter | None = None,
) -> LocalAnswer:
    """The archive scenes most similar to an image file, an archive scene (or a `region` of
    either), scenes to be like or labels (`text`, a phrase, read onto them), as `query`
    asks, only those `concepts` keep when given, from the model, store and SQL of
    `settings`; with each hit's match map of `match_grid` cells per side when given."""
    if image is not None or region is not None or match_grid is not None:
        return _search_by_pixels(
            settings, engine, query, text, image=image, scene_id=scene_id, region=region,
            match_grid=match_grid, concepts=concepts,
        )  # fmt: skip
    return with_local_index(
        settings,
        lambda served: _search(
            settings, served, engine, query, text, scene_id=scene_id, concepts=concepts
        ),
    )


def concept_here(settings: Settings, engine: Engine, query: ConceptQuery) -> ConceptPage:
    """A few-shot concept search, or the archive ranked by a saved concept
    (`service.usecases.saved_concepts.concept_ranking`), from the model
    card, store and SQL of `settings`."""
    return with_local_index(
        settings,
        lambda served: concept_ranking(
            served,
            Catalog(engine),
            ConceptStore(engine),
            query,
            weight=settings.model.backbone_rerank_weight,
        ),
    )


def with_local_index(settings: Settings, use: Callable[[ModelIndex], T]) -> T:
    """`use` of the settings' model card and index version in service, the store closed
    after; NothingToSearchError when there is none to search. For the CLI's commands that
    read the index without loading the network (`grn search --scene`, `grn concept`)."""
    store = open_store(settings.store)
    try:
        try:
            served = open_index_only(settings, store)
        except (
            ModelFileError, IndexNotReadyError, IndexModelMismatchError,
            VectorStoreUnavailableError, OSError,
        ) as exc:  # fmt: skip
            raise NothingToSearchError(f"nothing to search: {exc}") from exc
        return use(served)
    finally:
        store.close()


def _search_by_pixels(
    settings: Settings,
    engine: Engine,
    query: SearchQuery,
    text: str | None,
    *,
    image: Path | None,
    scene_id: int | None,
    region: regions.Region | None,
    match_grid: int | None,
    concepts: ConceptFilter | None,
) -> LocalAnswer:
    """Embed the image file or the archive scene's image (or their region) with the network
    (loaded here: seconds), then search; the hits' windows through the network for their
    match maps when `match_grid` is given."""
    from model.imageio import read_image
    from model.inference import predict
    from service.runtime import Runtime

    runtime = Runtime(settings)
    try:
        if not runtime.refresh():
            raise NothingToSearchError(f"nothing to search: {runtime.problem}")
        snapshot = runtime.current()

        def embed(images: list[Any]) -> Any:
            return predict(snapshot.net, snapshot.card, images, snapshot.device)

        catalog = Catalog(engine)
        if image is not None:
            pixels = read_image(image)
        elif scene_id is not None:
            pixels = regions.scene_pixels(catalog, scene_id)
        else:
            raise ValueError("a region or match maps need a query image: a file or a scene id")
        out = embed([regions.cropped(pixels, region)])
        if image is None and region is None:  # the scene as indexed: its stored vector
            answer = _search(
                settings, snapshot, engine, query, text, scene_id=scene_id, concepts=concepts
            )
        else:
            answer = _search(
                settings, snapshot, engine, query, text, vector=out.embeddings[0],
                descriptor=out.descriptors[0], by_image=True,
                region_of=scene_id if image is None else None, concepts=concepts,
            )  # fmt: skip
        if match_grid is None:
            return answer
        hits = [regions.scene_pixels(catalog, hit.scene.id) for hit in answer.page.hits]
        crops, shapes = regions.all_windows(hits, match_grid)
        embedded = embed(crops).embeddings if crops else np.empty((0, 0))
        return replace(answer, maps=regions.match_maps(out.embeddings[0], embedded, shapes))
    finally:
        runtime.store.close()


def _search(
    settings: Settings,
    served: ModelIndex,
    engine: Engine,
    query: SearchQuery,
    text: str | None,
    *,
    scene_id: int | None = None,
    vector: Any = None,
    descriptor: Any = None,
    by_image: bool = False,
    region_of: int | None = None,
    concepts: ConceptFilter | None = None,
) -> LocalAnswer:
    understood = None
    catalog = Catalog(engine)
    if concepts is not None and concepts.names:  # as the routes resolve them
        store = ConceptStore(engine)
        allowed = concept_allowed(served, catalog, store, concepts.names, concepts.min_score)
        query = replace(query, where=query.where.allowing(allowed))
    if text:
        from service.usecases.text import phrase_reader, read_phrase, with_reading

        vocabulary = served.card.label_names
        folders = catalog.table(served.model_version).folder_names
        understood = read_phrase(text, vocabulary, folders, phrase_reader())
        labels_all, labels_none, folder = with_reading(
            list(query.where.labels_all), list(query.where.labels_none), query.where.folder,
            understood, vocabulary=vocabulary,
            other_query=by_image or scene_id is not None or bool(query.more_like),
        )  # fmt: skip
        where = replace(query.where, labels_all=labels_all, labels_none=labels_none, folder=folder)
        query = replace(query, where=where)
    page = search_scenes(
        served, catalog, query, vector=vector, scene_id=scene_id,
        descriptor=descriptor, rerank=Rerank.of(settings), region_of=region_of,
    )  # fmt: skip
    return LocalAnswer(page, understood)
