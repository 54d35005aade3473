"""The archive: scenes listed and filtered, one scene's metadata, its image and thumbnail,
the labels with their counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response

from index.filters import utc
from service.api.assets import installed
from service.api.deps import (
    READER,
    CatalogDep,
    SceneId,
    SceneUrls,
    SettingsDep,
    in_thread,
)
from service.api.errors import documented
from service.api.schemas.archive import (
    FoldersResponse,
    LabelCount,
    LabelsResponse,
    PlacesResponse,
    SceneListing,
    SceneOut,
    ScenePage,
    ScenePlace,
)
from service.storage.db import Scene, SceneFootprint
from service.usecases.thumbnails import cache_headers, not_modified, rendering, thumbnail

router = APIRouter(tags=["archive"], dependencies=READER, responses=documented(401, 403, 503))
SCENE_ERRORS = documented(404, 422)


def image_responses(media_type: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` of a scene's image route: the image, 304 for a cached one, and
    the scene errors."""
    return {
        200: {"content": {media_type: {}}},
        304: {"description": "Not modified"},
        **SCENE_ERRORS,
    }


def scene_out(urls: SceneUrls, scene: Scene) -> SceneOut:
    image_url, thumbnail_url = urls(scene.id)
    meta = getattr(scene, "meta", None)
    return SceneOut(
        id=scene.id,
        image=scene.name,
        scene=scene.folder,
        split=scene.split,
        labels=[label.name for label in scene.labels],
        width=scene.width,
        height=scene.height,
        image_url=image_url,
        thumbnail_url=thumbnail_url,
        metadata=None if meta is None else json.loads(meta),
        place=place_out(getattr(scene, "footprint", None)),
        added=utc(scene.created_at),
    )


def place_out(footprint: SceneFootprint | None) -> ScenePlace | None:
    if footprint is None:
        return None
    window = [int(v) for v in footprint.window.split(",")] if footprint.window else None
    return ScenePlace(
        footprint=json.loads(footprint.geometry),
        crs=footprint.crs,
        source=footprint.source,
        window=window,
    )


@router.get("/scenes", response_model=ScenePage, responses=documented(400, 422))
async def scenes(
    request: Request, catalog: CatalogDep, listing: Annotated[SceneListing, Query()]
) -> ScenePage:
    """The archive's scenes, filtered as a search filters them (labels, scene folder, split,
    ids, place, time added) and by part of the image name, ordered by id or name, paged."""
    where = listing.to_filter()
    offset, limit = listing.offset, listing.limit
    rows, total = await in_thread(
        lambda: catalog.page(where, offset, limit, name=listing.q, order=listing.order)
    )
    end = offset + len(rows)
    urls = SceneUrls(request)
    return ScenePage(
        scenes=[scene_out(urls, row) for row in rows],
        total=total,
        offset=offset,
        limit=limit,
        next_offset=end if end < total else None,
    )


@router.get("/scenes/{scene_id}", response_model=SceneOut, responses=SCENE_ERRORS)
async def scene_detail(request: Request, catalog: CatalogDep, scene_id: SceneId) -> SceneOut:
    """One scene's metadata."""
    return scene_out(SceneUrls(request), await in_thread(catalog.scene, scene_id))


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


@router.get(
    "/scenes/{scene_id}/thumbnail",
    name="scene_thumbnail",
    responses=image_responses("image/jpeg"),
)
async def scene_thumbnail(
    request: Request, catalog: CatalogDep, settings: SettingsDep, scene_id: SceneId
) -> Response:
    """A JPEG thumbnail of the scene (longest side `thumbnail_size`), cached on disk."""
    scene = await in_thread(catalog.scene, scene_id)
    headers = cache_headers(f"{scene.checksum[:32]}-{settings.files.thumbnail_size}", settings)
    if not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    data = await in_thread(thumbnail, catalog, scene, settings)
    return Response(data, media_type="image/jpeg", headers=headers)


@router.get(
    "/scenes/{scene_id}/preview",
    name="scene_preview",
    responses=image_responses("image/jpeg"),
)
async def scene_preview(
    request: Request,
    catalog: CatalogDep,
    settings: SettingsDep,
    scene_id: SceneId,
    size: Annotated[
        int | None,
        Query(ge=16, le=8192, description="Longest side in pixels (default: full resolution)."),
    ] = None,
) -> Response:
    """The scene as a browser shows it: a JPEG of any stored format (TIFF, 16-bit and
    multi-band files stretched as for the model), at full resolution or `size`."""
    scene = await in_thread(catalog.scene, scene_id)
    headers = cache_headers(f"{scene.checksum[:32]}-preview-{size or 'full'}", settings)
    if not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    data = await in_thread(
        rendering, catalog, scene, size, Path(settings.files.thumbnail_dir) / "previews"
    )
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
