"""Regions and match maps over HTTP (`service.usecases.regions`): the query image's region
through the batcher, the match maps of a page's hits, and `POST /match`, one hit's map on
demand (the page's viewer asks for it when the person wants to see where a hit matches)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError

from service.api.deps import (
    BatcherDep,
    CatalogDep,
    RuntimeDep,
    SettingsDep,
    elapsed_ms,
    image_query_body,
    in_thread,
    validated,
)
from service.api.errors import documented
from service.api.schemas.filters import from_text
from service.api.schemas.regions import MatchMapOut, MatchRequest, MatchResponse
from service.api.uploads import decode_all, read_uploads
from service.errors import BadRequestError
from service.runtime import Batcher, Inference, Snapshot
from service.storage.catalog import Catalog
from service.usecases.regions import (
    MatchMap,
    Region,
    all_windows,
    cropped,
    match_maps,
    scene_pixels,
)

router = APIRouter()  # reads: create_app gives their access (deps.read_access)


async def embedded(
    batcher: Batcher, snapshot: Snapshot, image: np.ndarray, region: Region | None
) -> Inference:
    """The image, or its region, through the network (RegionError when the region does
    not lie inside the image)."""
    return (await batcher.infer(snapshot, [cropped(image, region)]))[0]


async def hit_match_maps(
    batcher: Batcher,
    snapshot: Snapshot,
    catalog: Catalog,
    query: np.ndarray,
    hit_ids: Sequence[int],
    grid: int,
) -> list[MatchMap]:
    """Each hit's match map for the query's embedding: the hits' images read side by side,
    all their windows through the network together (the batcher cuts them into batches)."""
    if not hit_ids:
        return []
    images = await asyncio.gather(*(in_thread(scene_pixels, catalog, i) for i in hit_ids))
    crops, shapes = all_windows(images, grid)
    inferred = await batcher.infer(snapshot, crops)
    return match_maps(query, np.stack([out.embedding for out in inferred]), shapes)


@router.post(
    "/match",
    response_model=MatchResponse,
    tags=["search"],
    responses=documented(400, 401, 403, 404, 413, 422, 503),
    openapi_extra=image_query_body(MatchRequest, not_in_form=("scene_id",)),
)
async def match(
    request: Request,
    runtime: RuntimeDep,
    batcher: BatcherDep,
    catalog: CatalogDep,
    settings: SettingsDep,
) -> MatchResponse:
    """Where in the archive scene `hit_id` a query matches: its match map, a grid of cosine
    similarities between the query (an archive scene, `scene_id`, as JSON; or an upload,
    multipart field `file`; or a `region` of either) and windows of the hit's image, as
    `POST /search` with `match_maps` gives each hit."""
    start = time.perf_counter()
    snapshot = runtime.current()
    content_type = request.headers.get("content-type", "")
    with request.app.state.model_requests.admit():
        if content_type.startswith("multipart/form-data"):
            files, fields = await read_uploads(request, max_files=1)
            fields.pop("scene_id", None)
            params = validated(lambda: from_text(MatchRequest, fields))
            image = (await decode_all(files, settings))[0]
        elif content_type.startswith("application/json") or not content_type:
            body = await request.body()
            params = validated(lambda: MatchRequest.model_validate_json(body))
            if params.scene_id is None:
                raise RequestValidationError(
                    [{"loc": ("body", "scene_id"), "msg": "give a scene_id (or upload an image)",
                      "type": "missing"}]
                )  # fmt: skip
            image = await in_thread(scene_pixels, catalog, params.scene_id)
        else:
            raise BadRequestError(
                f"unsupported content type {content_type!r}: send multipart/form-data with an "
                "image, or application/json with a scene_id",
                "unsupported_media_type",
            )
        query = await embedded(batcher, snapshot, image, params.query_region())
        (found,) = await hit_match_maps(
            batcher, snapshot, catalog, query.embedding, [params.hit_id], params.grid
        )
    return MatchResponse(
        hit_id=params.hit_id,
        query_id=params.scene_id,
        region=params.region,
        match_map=MatchMapOut.of(found),
        model_version=snapshot.model_version,
        elapsed_ms=elapsed_ms(start),
    )
