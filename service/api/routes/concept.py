"""Few-shot concept search: `POST /search/concept` ranks the archive by a probe taught with
positive and negative scenes (`service.usecases.concept.concept_search`)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from service.api.deps import (
    CatalogDep,
    RuntimeDep,
    SceneUrls,
    SettingsDep,
    elapsed_ms,
    in_thread,
)
from service.api.errors import documented
from service.api.routes.saved_concepts import resolved_concepts
from service.api.routes.search import hit_out, placed_hits
from service.api.schemas.concept import ConceptRequest, ConceptResponse
from service.storage.concepts import ConceptStore
from service.usecases.saved_concepts import concept_ranking

router = APIRouter()  # reads: create_app gives their access (deps.read_access)


@router.post(
    "/search/concept",
    response_model=ConceptResponse,
    tags=["search"],
    responses=documented(400, 401, 403, 404, 409, 422, 503),
)
async def concept(
    request: Request,
    runtime: RuntimeDep,
    catalog: CatalogDep,
    settings: SettingsDep,
    params: ConceptRequest,
) -> ConceptResponse:
    """The scenes most like the `positives` and unlike the `negatives`: a linear probe fitted
    on the served descriptors scores the candidates the index gathers (the nearest of each
    positive and of their mean, every filter applied), best first. Judged scenes are left
    out; the answer says how many candidates were scored. Iterate: add wrong hits to
    `negatives`, right ones to `positives`. Or the archive ranked by a saved `concept`: the
    scenes nearest its probe's direction (filters applied) scored by its probe, as its
    filter and count score them (404 for an unknown name, 409 for a stale concept)."""
    start = time.perf_counter()
    snapshot = runtime.current()
    wanted = (await resolved_concepts(request, params, runtime, catalog)).to_query()
    with request.app.state.searches.admit():  # past GRN_MAX_SEARCHES: 503 at once
        page = await in_thread(
            lambda: concept_ranking(
                snapshot,
                catalog,
                ConceptStore(catalog.engine),
                wanted,
                weight=settings.model.backbone_rerank_weight,
            )
        )
    urls = SceneUrls(request)
    places = await placed_hits(catalog, page.hits)
    return ConceptResponse(
        hits=[hit_out(urls, hit, places.get(hit.scene.id)) for hit in page.hits],
        total=page.total,
        offset=page.offset,
        limit=page.limit,
        next_offset=page.next_offset,
        candidates=page.candidates,
        descriptors=page.descriptors,
        concept=wanted.concept,
        positives=list(page.positives),
        negatives=list(page.negatives),
        model_version=page.model_version,
        index_version=page.index_version,
        elapsed_ms=elapsed_ms(start),
    )
