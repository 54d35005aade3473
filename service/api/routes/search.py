"""Search: the archive scenes most similar to an upload or to an archive scene
(`service.usecases.search.search_scenes`), as JSON or as files (`service.api.exports`), and
where else a pattern occurs (`/search/density`)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from index.stores import ModelIndex
from service.api.deps import (
    BatcherDep,
    CatalogDep,
    LoopBudget,
    RuntimeDep,
    SceneUrls,
    SettingsDep,
    elapsed_ms,
    image_query_body,
    in_thread,
    validated,
)
from service.api.errors import documented_as
from service.api.exports import cells_geojson, hits_csv, hits_geojson
from service.api.routes.classify import classifier_for
from service.api.routes.regions import embedded, hit_match_maps
from service.api.routes.saved_concepts import resolved_concepts
from service.api.schemas.classify import ImageClassification
from service.api.schemas.regions import MatchMapOut
from service.api.schemas.search import (
    DensityCell,
    DensityRequest,
    DensityResponse,
    Hit,
    SearchRequest,
    SearchResponse,
    Understood,
)
from service.api.uploads import decode_all, infer_uploads, read_uploads
from service.errors import BadRequestError
from service.storage.catalog import Catalog
from service.storage.scene_table import SceneTable
from service.usecases.classify import image_labels, no_classifier_note
from service.usecases.density import hit_density
from service.usecases.regions import scene_pixels
from service.usecases.search import RankedScene, Rerank, SearchPage, search_scenes
from service.usecases.text import phrase_reader, read_phrase, with_reading

router = APIRouter()  # reads: create_app gives their access (deps.read_access)


@router.post(
    "/search",
    response_model=SearchResponse,
    tags=["search"],
    responses=documented_as(
        "text/csv", "The hits (CSV with format=csv)", 400, 401, 403, 404, 409, 413, 422, 503
    ),
    openapi_extra=image_query_body(SearchRequest, not_in_form=("scene_id", "include_query")),
)
async def search(
    request: Request,
    runtime: RuntimeDep,
    batcher: BatcherDep,
    catalog: CatalogDep,
    settings: SettingsDep,
) -> Any:
    """The archive scenes most similar to an uploaded image (multipart, field `file`, the
    other fields as form fields) or to an archive scene (JSON with `scene_id`), best
    first, with optional label, scene-folder and id filters, a minimum score and paging."""
    start = time.perf_counter()
    snapshot = runtime.current()
    content_type = request.headers.get("content-type", "")
    vector, scene_id, probabilities, descriptor = None, None, None, None
    region_of = None  # the archive scene whose region is the query
    query_vector = None  # the query image's embedding, for match maps
    model_requests = request.app.state.model_requests
    if content_type.startswith("multipart/form-data"):
        with model_requests.admit():  # past GRN_MAX_MODEL_REQUESTS: 503 before parsing
            files, fields = await read_uploads(request, max_files=1)
            fields.pop("include_query", None)
            params = validated(lambda: SearchRequest.from_text(fields, by_image=True))
            if params.region is None:
                (inference,) = await infer_uploads(files, settings, batcher, snapshot)
            else:
                image = (await decode_all(files, settings))[0]
                inference = await embedded(batcher, snapshot, image, params.query_region())
        vector, probabilities = inference.embedding, inference.probabilities
        descriptor, query_vector = inference.descriptor, inference.embedding
    elif content_type.startswith("application/json") or not content_type:
        body = await request.body()
        params = validated(lambda: SearchRequest.model_validate_json(body))
        scene_id = params.scene_id
        wants_pixels = params.classify or params.region is not None or params.match_maps
        if wants_pixels and scene_id is not None:  # the scene's own image (or its region)
            with model_requests.admit():
                image = await in_thread(scene_pixels, catalog, scene_id)
                inference = await embedded(batcher, snapshot, image, params.query_region())
            probabilities, query_vector = inference.probabilities, inference.embedding
            if params.region is not None:  # searched by the region's embedding
                vector, descriptor, region_of, scene_id = (
                    inference.embedding,
                    inference.descriptor,
                    scene_id,
                    None,
                )
    else:
        raise BadRequestError(
            f"unsupported content type {content_type!r}: send multipart/form-data with "
            "an image, or application/json with a scene_id",
            "unsupported_media_type",
        )
    understood = None
    if params.text:
        understood, params = await read_text(params, snapshot, catalog, batcher, other_query=(
            scene_id is not None or vector is not None or bool(params.more_like)
        ))  # fmt: skip
    wanted = (await resolved_concepts(request, params, runtime, catalog)).to_query()
    with request.app.state.searches.admit():  # past GRN_MAX_SEARCHES: 503 at once
        page = await searched(
            request.app.state.search_budget,
            catalog,
            lambda table: search_scenes(
                snapshot,
                catalog,
                wanted,
                vector=vector,
                scene_id=scene_id,
                table=table,
                descriptor=descriptor,
                rerank=Rerank.of(settings),
                region_of=region_of,
            ),
        )
    maps = None
    if params.match_maps and query_vector is not None:  # a query image: checked in SearchRequest
        with model_requests.admit():
            ids = [hit.scene.id for hit in page.hits]
            maps = await hit_match_maps(
                batcher, snapshot, catalog, query_vector, ids, params.match_grid
            )
    labels, predicted, note = None, None, None
    if params.classify and probabilities is not None:
        if await classifier_for(catalog, snapshot.card):
            query = ImageClassification.of(image_labels("", snapshot.card, probabilities))
            labels, predicted = query.labels, query.predicted
        else:
            note = no_classifier_note(snapshot.card)
    urls = SceneUrls(request)
    places = await placed_hits(catalog, page.hits)
    hits = [hit_out(urls, hit, places.get(hit.scene.id)) for hit in page.hits]
    for hit, found in zip(hits, maps or [], strict=False):
        hit.match_map = MatchMapOut.of(found)
    if params.format == "geojson":
        return JSONResponse(
            hits_geojson(hits, page.offset, page.model_version),
            media_type="application/geo+json",
        )
    if params.format == "csv":
        return Response(
            hits_csv(hits, page.offset),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="search.csv"'},
        )
    paging = {f.name: getattr(page, f.name) for f in dataclasses.fields(page) if f.name != "hits"}
    return SearchResponse(
        hits=hits,
        elapsed_ms=elapsed_ms(start),
        labels=labels,
        predicted=predicted,
        understood=understood,
        note=note,
        region=params.region,
        **paging,
    )


async def read_text(
    params: SearchRequest,
    snapshot: ModelIndex,
    catalog: Catalog,
    batcher: BatcherDep,
    *,
    other_query: bool,
) -> tuple[Understood, SearchRequest]:
    """What `params.text` reads as (`service.usecases.text.read_phrase`: the labels of the
    model, the catalog's scene folders), and the request with it added."""
    labels = snapshot.card.label_names
    folders = (await in_thread(catalog.table, snapshot.model_version)).folder_names
    read = await in_thread(batcher.call, read_phrase, params.text, labels, folders, phrase_reader())
    labels_all, labels_none, folder = with_reading(
        params.labels_all, params.labels_none, params.scene, read, vocabulary=labels,
        other_query=other_query,
    )  # fmt: skip
    understood = Understood(
        labels_all=read.labels_all, labels_none=read.labels_none, folders=read.folders,
        words_not_understood=read.words_not_understood, not_understood=read.words_not_understood,
    )  # fmt: skip
    update = {"labels_all": labels_all, "labels_none": labels_none, "scene": folder}
    return understood, params.model_copy(update=update)


async def searched(
    budget: LoopBudget, catalog: Catalog, search: Callable[[SceneTable | None], SearchPage]
) -> SearchPage:
    """`search` on the event loop when searches have been short (`LoopBudget`), the catalog
    is local and its arrays are current; otherwise in a worker thread, which also refreshes
    the arrays (a search by id at c = 1: p50 3.2-3.5 against 3.7-4.0 ms through a thread,
    wrk, docs/performance.md)."""
    if budget.fits and catalog.local:
        table = catalog.fresh_table()
        if table is not None:
            return budget.timed(lambda: search(table))
    return await in_thread(budget.timed, lambda: search(None))


@router.post(
    "/search/density",
    response_model=DensityResponse,
    tags=["search"],
    responses=documented_as(
        "application/geo+json", "format=geojson", 400, 401, 403, 404, 409, 422, 503
    ),
)
async def density(
    request: Request,
    runtime: RuntimeDep,
    catalog: CatalogDep,
    settings: SettingsDep,
    params: DensityRequest,
) -> Any:
    """Where else a pattern occurs: the top `k` scenes most similar to an archive scene (or
    to scenes to be like, or labels), filters as for `/search`, counted per grid cell of
    `cell_m` metres or per source raster; with format=geojson, the areas as a
    FeatureCollection whose properties carry the counts."""
    if params.format == "csv":
        raise BadRequestError("density answers json or geojson, not csv", "unsupported_format")
    if params.region is not None or params.match_maps:
        raise BadRequestError("density counts the hits of a whole scene: no region or match_maps")
    snapshot = runtime.current()
    params = await resolved_concepts(request, params, runtime, catalog)
    wanted = dataclasses.replace(params.to_query(), offset=0, limit=params.k)
    with request.app.state.searches.admit():
        # one table for the hits and their places
        table = await in_thread(catalog.table, snapshot.model_version)
        page = await in_thread(
            lambda: search_scenes(
                snapshot,
                catalog,
                wanted,
                scene_id=params.scene_id,
                table=table,
                rerank=Rerank.of(settings),
            )
        )
        ids = [hit.scene.id for hit in page.hits if hit.scene.placed]
        sources = await in_thread(catalog.sources, ids) if params.by == "source" else None
    cells = hit_density(table, page.hits, by=params.by, cell_m=params.cell_m, sources=sources)
    answer = DensityResponse(
        cells=[DensityCell(**dataclasses.asdict(c)) for c in cells],
        hits=len(page.hits),
        placed=len(ids),
        by=params.by,
        cell_m=params.cell_m if params.by == "grid" else None,
        query_id=params.scene_id,
        model_version=page.model_version,
    )
    if params.format != "geojson":
        return answer
    return JSONResponse(cells_geojson(answer), media_type="application/geo+json")


async def placed_hits(catalog: Catalog, hits: list[RankedScene]) -> dict[int, dict[str, Any]]:
    """The footprints (GeoJSON) of the hits that have one, from SQL by primary key; no
    query at all when none of them is georeferenced (the arrays say)."""
    ids = [hit.scene.id for hit in hits if hit.scene.placed]
    if not ids:
        return {}
    rows = await in_thread(catalog.footprints, ids)
    return {scene_id: json.loads(row["geometry"]) for scene_id, row in rows.items()}


def hit_out(urls: SceneUrls, hit: RankedScene, footprint: dict[str, Any] | None = None) -> Hit:
    scene = hit.scene
    image_url, thumbnail_url = urls(scene.id)
    return Hit(
        id=scene.id,
        image=scene.name,
        score=hit.score,
        labels=list(scene.labels),
        scene=scene.folder,
        image_url=image_url,
        thumbnail_url=thumbnail_url,
        footprint=footprint,
        added=scene.added,
        acquired=scene.acquired,
    )
