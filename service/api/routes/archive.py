"""The archive: scenes listed and filtered, one scene's metadata, its image and thumbnail,
the labels with their counts."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from index.filters import utc
from service.api.assets import installed
from service.api.cursors import BadCursorError, Cursor
from service.api.deps import (
    CatalogDep,
    RenderCacheDep,
    RuntimeDep,
    SceneId,
    SceneUrls,
    SettingsDep,
    in_thread,
)
from service.api.errors import documented, documented_as
from service.api.exports import scenes_csv, scenes_geojson
from service.api.routes.saved_concepts import resolved_concepts
from service.api.schemas.archive import (
    FoldersResponse,
    LabelCount,
    LabelsResponse,
    PlacesResponse,
    SamePlacePage,
    SamePlaceQuery,
    SamePlaceScene,
    SceneExport,
    SceneListing,
    SceneOut,
    ScenePage,
    ScenePlace,
)
from service.api.stac_items import scene_item
from service.runtime import Runtime, ServiceNotReadyError, Snapshot
from service.storage.db import Scene, SceneFootprint
from service.storage.listing import Footprint, ListedScene, Seek
from service.usecases.same_place import SamePlace, same_place
from service.usecases.thumbnails import (
    PREVIEW_SIZES,
    cache_headers,
    not_modified,
    preview,
    preview_size,
    thumbnail,
)

PARQUET = "application/vnd.apache.parquet"
# reads: create_app gives their access (deps.read_access)
router = APIRouter(tags=["archive"], responses=documented(401, 403, 503))
SCENE_STATUSES = (404, 422)
SCENE_ERRORS = documented(*SCENE_STATUSES)
ScenesUrls = Callable[[int], tuple[str, str]]
"""A scene's (image URL, thumbnail URL) by its id: `SceneUrls` for a request, or the
service-relative paths the CLI answers with."""


def image_responses(media_type: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` of a scene's image route: the image, 304 for a cached one, and
    the scene errors."""
    return {
        200: {"content": {media_type: {}}},
        304: {"description": "Not modified"},
        **SCENE_ERRORS,
    }


JPEG = image_responses("image/jpeg")


def scene_out(urls: ScenesUrls, scene: Scene | ListedScene) -> SceneOut:
    image_url, thumbnail_url = urls(scene.id)
    meta = getattr(scene, "meta", None)
    return SceneOut(
        id=scene.id,
        image=scene.name,
        scene=scene.folder,
        split=scene.split,
        labels=scene.label_names,
        width=scene.width,
        height=scene.height,
        image_url=image_url,
        thumbnail_url=thumbnail_url,
        metadata=None if meta is None else json.loads(meta),
        place=place_out(getattr(scene, "footprint", None)),
        added=utc(scene.created_at),
        acquired=None if scene.acquired is None else utc(scene.acquired),
    )


def place_out(footprint: SceneFootprint | Footprint | None) -> ScenePlace | None:
    if footprint is None:
        return None
    window = [int(v) for v in footprint.window.split(",")] if footprint.window else None
    return ScenePlace(
        footprint=json.loads(footprint.geometry),
        crs=footprint.crs,
        source=footprint.source,
        window=window,
    )


@router.get("/scenes", response_model=ScenePage, responses=documented(400, 404, 409, 422))
async def scenes(
    request: Request,
    catalog: CatalogDep,
    runtime: RuntimeDep,
    listing: Annotated[SceneListing, Query()],
) -> ScenePage:
    """The archive's scenes, filtered as a search filters them (labels, scene folder, split,
    ids, place, time added, saved concepts) and by part of the image name, ordered by id or
    name, paged by `offset` or, at any depth for the same cost, by the `cursor` a page gives
    for the next (`next_cursor`)."""
    where = (await resolved_concepts(request, listing, runtime, catalog)).to_filter()
    filters = listing.fingerprint()
    start = None
    if listing.cursor is not None:
        if listing.offset:
            raise BadCursorError(
                "give offset or cursor, not both: a cursor's page starts where it says"
            )
        start = Cursor.decode(listing.cursor, order=listing.order, filters=filters)
    offset = start.position if start else listing.offset
    limit = listing.limit
    rows, counted = await in_thread(
        lambda: catalog.page(
            where, 0 if start else offset, limit + 1, name=listing.q, order=listing.order,
            after=start.seek if start else None, count=start is None,
        )
    )  # fmt: skip
    total = start.total if start else counted or 0
    more, rows = len(rows) > limit, rows[:limit]
    end = offset + len(rows)
    after = Cursor(Seek.after(listing.order, rows[-1]), end, total, filters) if more else None
    urls = SceneUrls(request)
    return ScenePage(
        scenes=[scene_out(urls, row) for row in rows],
        total=total,
        offset=offset,
        limit=limit,
        next_offset=end if more else None,
        next_cursor=after.encode() if after else None,
        note=None if rows else empty_note(start is not None, total),
    )


def empty_note(by_cursor: bool, total: int) -> str:
    """What an empty page means."""
    if not by_cursor and total == 0:
        return "no scene passes these filters"
    if by_cursor:
        return "no scene after the cursor: the scenes past it have gone since it was made"
    return f"the offset lies past the last of the {total} scenes that pass these filters"


@router.get(
    "/scenes/export",
    responses={
        200: {
            "content": {"text/csv": {}, "application/geo+json": {}, PARQUET: {}},
            "description": "Every scene that passes the filters, streamed",
        },
        **documented(400, 404, 409, 422, 503),
    },
)
async def export_scenes(
    request: Request,
    catalog: CatalogDep,
    runtime: RuntimeDep,
    selection: Annotated[SceneExport, Query()],
) -> Response:
    """Every scene that passes the filters (as `GET /scenes` takes them), in the order
    asked, as CSV or GeoJSON, streamed in chunks of rows read by keyset, so memory holds one
    chunk whatever the archive's size; or as GeoParquet, written a chunk at a time to a file
    then sent, with the served model's label scores (and embeddings, when asked)."""
    where = (await resolved_concepts(request, selection, runtime, catalog)).to_filter()
    walk = catalog.walk(where, name=selection.q, order=selection.order)
    first = await in_thread(next, walk, [])  # a bad filter is a 400 before the 200 starts
    if selection.format == "geoparquet":
        return await _parquet_export(runtime, chain([first], walk), selection.embeddings)
    urls = SceneUrls(request)
    chunks = ([scene_out(urls, row) for row in rows] for rows in chain([first], walk))
    if selection.format == "geojson":
        body, media, suffix = scenes_geojson(chunks), "application/geo+json", "geojson"
    else:
        body, media, suffix = scenes_csv(chunks), "text/csv; charset=utf-8", "csv"
    disposition = f'attachment; filename="scenes.{suffix}"'
    return StreamingResponse(body, media_type=media, headers={"Content-Disposition": disposition})


async def _parquet_export(
    runtime: Runtime, chunks: Iterator[list[ListedScene]], embeddings: bool
) -> FileResponse:
    from service.usecases.geoparquet import write_geoparquet

    try:
        served: Snapshot | None = runtime.current()
    except ServiceNotReadyError:
        if embeddings:
            raise
        served = None  # the scenes without scores rather than nothing
    handle, name = tempfile.mkstemp(prefix="grn-export-", suffix=".parquet")
    os.close(handle)
    try:
        await in_thread(
            lambda: write_geoparquet(chunks, Path(name), index=served, embeddings=embeddings)
        )
    except BaseException:
        os.unlink(name)
        raise
    gone = BackgroundTask(os.unlink, name)
    return FileResponse(name, media_type=PARQUET, filename="scenes.parquet", background=gone)


@router.get(
    "/scenes/{scene_id}/stac",
    responses=documented_as("application/geo+json", None, *SCENE_STATUSES),
)
async def scene_stac(request: Request, catalog: CatalogDep, scene_id: SceneId) -> JSONResponse:
    """The scene as a STAC Item (1.1.0): footprint, acquisition time, labels, the
    properties of the STAC item it came from, and its image as an asset."""
    scene = await in_thread(catalog.scene, scene_id)
    image_url, thumbnail_url = SceneUrls(request)(scene.id)
    item = scene_item(
        scene, image_url, thumbnail_url, self_url=str(request.url),
        scene_url=str(request.url_for("scene_detail", scene_id=scene.id)),
    )  # fmt: skip
    return JSONResponse(item, media_type="application/geo+json")


@router.get("/scenes/{scene_id}", response_model=SceneOut, responses=SCENE_ERRORS)
async def scene_detail(request: Request, catalog: CatalogDep, scene_id: SceneId) -> SceneOut:
    """One scene's metadata."""
    return scene_out(SceneUrls(request), await in_thread(catalog.scene, scene_id))


@router.get("/scenes/{scene_id}/same-place", response_model=SamePlacePage, responses=SCENE_ERRORS)
async def scene_same_place(
    request: Request,
    catalog: CatalogDep,
    scene_id: SceneId,
    asked: Annotated[SamePlaceQuery, Query()],
) -> SamePlacePage:
    """The same place over time: the other scenes whose footprint covers at least
    `min_overlap` of this scene's (area(both) / area(this scene's footprint)), by acquisition
    time, unknown last (docs/geo.md). A scene without a footprint gives an empty page."""
    found = await in_thread(
        lambda: same_place(
            catalog, scene_id, min_overlap=asked.min_overlap, offset=asked.offset,
            limit=asked.limit,
        )
    )  # fmt: skip
    return same_place_page(SceneUrls(request), asked, found)


def same_place_page(urls: ScenesUrls, asked: SamePlaceQuery, found: SamePlace) -> SamePlacePage:
    """`GET /scenes/{id}/same-place`'s body for the use case's page (`grn same-place`
    builds its answer here too)."""
    end = asked.offset + len(found.scenes)
    return SamePlacePage(
        scenes=[
            SamePlaceScene(**dict(scene_out(urls, scene)), overlap=share)
            for scene, share in found.scenes
        ],
        total=found.total,
        offset=asked.offset,
        limit=asked.limit,
        next_offset=end if end < found.total else None,
        min_overlap=asked.min_overlap,
        note=found.note,
    )


@router.get(
    "/scenes/{scene_id}/image",
    name="scene_image",
    response_class=FileResponse,
    responses=image_responses("image/*"),
)
async def scene_image(
    request: Request, catalog: CatalogDep, settings: SettingsDep, scene_id: SceneId
) -> Response:
    """The scene's original image file (cacheable; ETag is its SHA-256)."""
    scene = await in_thread(catalog.scene, scene_id)
    path = await in_thread(catalog.image_path, scene)
    headers = cache_headers(scene.checksum, settings)
    if not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=scene.media_type, headers=headers)


@router.get("/scenes/{scene_id}/thumbnail", name="scene_thumbnail", responses=JPEG)
async def scene_thumbnail(
    request: Request,
    catalog: CatalogDep,
    settings: SettingsDep,
    cache: RenderCacheDep,
    scene_id: SceneId,
) -> Response:
    """A JPEG thumbnail of the scene (longest side `thumbnail_size`), cached on disk."""
    scene = await in_thread(catalog.scene, scene_id)
    headers = cache_headers(f"{scene.checksum[:32]}-{settings.files.thumbnail_size}", settings)
    return await rendered_jpeg(request, headers, thumbnail, catalog, scene, settings, cache)


@router.get("/scenes/{scene_id}/preview", name="scene_preview", responses=JPEG)
async def scene_preview(
    request: Request,
    catalog: CatalogDep,
    settings: SettingsDep,
    cache: RenderCacheDep,
    scene_id: SceneId,
    size: Annotated[
        int | None,
        Query(
            ge=1,
            description="Longest side in pixels, snapped up to one of "
            f"{', '.join(map(str, PREVIEW_SIZES))} or full resolution past the largest "
            "(default: full resolution).",
        ),
    ] = None,
) -> Response:
    """The scene as a browser shows it: a JPEG of any stored format (TIFF, 16-bit and
    multi-band files stretched as for the model), at full resolution or at `size` snapped to
    a step (the header `X-Preview-Size` says which: a number, or `full`)."""
    scene = await in_thread(catalog.scene, scene_id)
    snapped = preview_size(size, scene)
    headers = cache_headers(f"{scene.checksum[:32]}-preview-{snapped or 'full'}", settings)
    headers["X-Preview-Size"] = str(snapped or "full")
    return await rendered_jpeg(request, headers, preview, catalog, scene, snapped, cache)


async def rendered_jpeg(
    request: Request, headers: dict[str, str], render: Callable[..., bytes], *args: Any
) -> Response:
    """A 304 when the browser holds this rendering already, else `render(*args)` as a JPEG
    (in a thread: it may read and resize the image)."""
    if not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    data = await in_thread(render, *args)
    return Response(data, media_type="image/jpeg", headers=headers)


@router.get("/labels", response_model=LabelsResponse)
async def labels(catalog: CatalogDep) -> LabelsResponse:
    """Label names and how many archive scenes carry each."""
    counts = await in_thread(catalog.label_counts)
    return LabelsResponse(labels=[LabelCount(name=n, count=c) for n, c in counts])


@router.get("/places", response_model=PlacesResponse)
async def places(catalog: CatalogDep, settings: SettingsDep) -> PlacesResponse:
    """Where the archive lies: how many scenes have a footprint and the box around them, with
    what the web page's map needs (its basemap setting, whether its library is installed)."""
    table = await in_thread(catalog.table)
    known = table.places[~np.isnan(table.places[:, 0])]
    bounds = None
    if len(known):
        bounds = [
            float(known[:, 0].min()), float(known[:, 1].min()),
            float(known[:, 2].max()), float(known[:, 3].max()),
        ]  # fmt: skip
        if bounds[2] > 180.0:  # a footprint across the antimeridian (unwrapped bounds)
            bounds[0], bounds[2] = -180.0, 180.0
    return PlacesResponse(
        placed=len(known),
        scenes=len(table),
        bounds=bounds,
        basemap=settings.page.map_tiles,
        attribution=settings.page.map_attribution or None,
        map_library=installed(settings.page.asset_dir),
    )


@router.get("/folders", response_model=FoldersResponse)
async def folders(catalog: CatalogDep) -> FoldersResponse:
    """Scene folders (the `scene` filter's values) and how many scenes each holds."""
    counts = await in_thread(catalog.folder_counts)
    return FoldersResponse(folders=[LabelCount(name=n, count=c) for n, c in counts])
