"""Saved concepts (`service.usecases.saved_concepts`): `GET /concepts` and
`GET /concepts/{name}` with the reads; `POST /concepts`, `PATCH` and `DELETE
/concepts/{name}` behind the admin or the write key, as the scene writes. And the one place
a request's `concepts` filter is resolved into the scenes it keeps (`resolved_concepts`)."""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam

from service.api.deps import WRITER, CatalogDep, RuntimeDep, in_thread
from service.api.errors import documented
from service.api.schemas.filters import FilterFields
from service.api.schemas.saved_concepts import (
    ConceptIn,
    ConceptOut,
    ConceptPatch,
    ConceptsResponse,
)
from service.runtime import Runtime
from service.storage.catalog import Catalog
from service.storage.concepts import ConceptStore
from service.usecases.saved_concepts import (
    NAME,
    ScoreCache,
    concept_allowed,
    concept_facet,
    concept_facets,
    refine_concept,
    save_concept,
)

router = APIRouter(tags=["concepts"])  # reads: create_app gives their access
writes = APIRouter(tags=["concepts"], dependencies=WRITER, responses=documented(401, 403))
ConceptNameParam = Annotated[
    str, PathParam(max_length=100, pattern=NAME.pattern, description="A concept's name.")
]
F = TypeVar("F", bound=FilterFields)


def score_cache(request: Request) -> ScoreCache:
    """The app's cache of concept scores (made on first use)."""
    found: ScoreCache | None = getattr(request.app.state, "concept_scores", None)
    if found is None:
        found = request.app.state.concept_scores = ScoreCache()
    return found


@router.get("/concepts", response_model=ConceptsResponse, responses=documented(503))
async def concepts(request: Request, runtime: RuntimeDep, catalog: CatalogDep) -> ConceptsResponse:
    """Every saved concept, by name, with how many scenes of the served archive it scores at
    or above its threshold (a facet, as `/labels` counts labels) and the model it was
    fitted with; one fitted with another model is re-fitted from its examples first, or
    marked `stale` when the served index holds none of its positives."""
    snapshot = runtime.current()
    store, cache = ConceptStore(catalog.engine), score_cache(request)
    facets = await in_thread(concept_facets, snapshot, catalog, store, cache)
    return ConceptsResponse(
        concepts=[ConceptOut.of(facet) for facet in facets], model_version=snapshot.model_version
    )


@router.get("/concepts/{name}", response_model=ConceptOut, responses=documented(404, 503))
async def concept_detail(
    request: Request, runtime: RuntimeDep, catalog: CatalogDep, name: ConceptNameParam
) -> ConceptOut:
    """One saved concept, as `GET /concepts` lists it."""
    snapshot = runtime.current()
    store, cache = ConceptStore(catalog.engine), score_cache(request)
    facet = await in_thread(lambda: concept_facet(snapshot, catalog, store, store.get(name), cache))
    return ConceptOut.of(facet)


@writes.post(
    "/concepts",
    response_model=ConceptOut,
    status_code=201,
    responses=documented(400, 404, 409, 422, 503),
)
async def save(
    request: Request, runtime: RuntimeDep, catalog: CatalogDep, body: ConceptIn
) -> ConceptOut:
    """Teach a concept by example (a probe fitted on the served embeddings of `positives`
    and `negatives`) and save it by name: then `concepts: [name]` filters `/search` and
    `/scenes`, and `GET /concepts` counts its scenes. 409 when the name is taken."""
    snapshot = runtime.current()
    store, cache = ConceptStore(catalog.engine), score_cache(request)

    def saved() -> ConceptOut:
        concept = save_concept(
            snapshot, catalog, store, body.name, body.positives, body.negatives, body.threshold
        )
        return ConceptOut.of(concept_facet(snapshot, catalog, store, concept, cache))

    return await in_thread(saved)


@writes.patch(
    "/concepts/{name}", response_model=ConceptOut, responses=documented(400, 404, 409, 422, 503)
)
async def refine(
    request: Request,
    runtime: RuntimeDep,
    catalog: CatalogDep,
    name: ConceptNameParam,
    body: ConceptPatch,
) -> ConceptOut:
    """Rename a saved concept, judge more scenes (wrong hits as `add_negatives`), forget
    some, or set its threshold; changed examples re-fit it on the served model."""
    snapshot = runtime.current()
    store, cache = ConceptStore(catalog.engine), score_cache(request)

    def refined() -> ConceptOut:
        concept = refine_concept(snapshot, catalog, store, name, body.to_change())
        return ConceptOut.of(concept_facet(snapshot, catalog, store, concept, cache))

    return await in_thread(refined)


@writes.delete("/concepts/{name}", status_code=204, responses=documented(404))
async def delete(catalog: CatalogDep, name: ConceptNameParam) -> Response:
    """Forget a saved concept."""
    await in_thread(ConceptStore(catalog.engine).delete, name)
    return Response(status_code=204)


async def resolved_concepts(request: Request, params: F, runtime: Runtime, catalog: Catalog) -> F:
    """`params` with its `concepts` filter resolved into the scenes they keep (404 for an
    unknown concept, 409 for a stale one); as they are without one."""
    if not params.concepts:
        return params
    snapshot = runtime.current()
    allowed = await in_thread(
        concept_allowed, snapshot, catalog, ConceptStore(catalog.engine), params.concepts,
        params.concept_min_score, score_cache(request),
    )  # fmt: skip
    return params.with_concept_ids(allowed)
