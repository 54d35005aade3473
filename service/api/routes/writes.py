"""Scenes added, corrected and removed (`service.usecases.writes`), behind the admin or the
write key: `POST /scenes`, `PATCH /scenes/{id}`, `DELETE /scenes/{id}`."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from model.geo import SceneGeo, geometry_from_geojson
from service.api.deps import (
    WRITER,
    BatcherDep,
    RuntimeDep,
    SceneId,
    SceneUrls,
    SettingsDep,
    elapsed_ms,
    in_thread,
    request_body,
    split_commas,
    upload_schema,
)
from service.api.errors import documented
from service.api.routes.archive import scene_out
from service.api.schemas.archive import SceneOut
from service.api.schemas.writes import AddedScene, NewSceneFields, ScenePatch, ScenesAdded
from service.api.uploads import decode_all, read_uploads
from service.errors import BadRequestError
from service.settings import Settings
from service.usecases.writes import DuplicateScenesError, NewScene, SceneChanges, SceneWriter

router = APIRouter(tags=["archive"], dependencies=WRITER, responses=documented(401, 403, 503))

ADD_SCHEMA = upload_schema(
    many=True,
    scenes={
        "type": "string",
        "description": "A JSON array with one object per file, in order (NewSceneFields); "
        "or, for one file, the fields below.",
    },
    name={"type": "string"},
    scene={"type": "string"},
    split={"type": "string", "enum": ["train", "val", "test"]},
    labels={"type": "string", "description": "Labels, comma-separated or repeated."},
    metadata={"type": "string", "description": "A JSON object."},
    footprint={
        "type": "string",
        "description": "Where it lies: a GeoJSON Polygon or Point in WGS84 (a GeoTIFF "
        "keeps its own georeferencing without it).",
    },
    acquired={
        "type": "string",
        "description": "When its pixels were taken, ISO 8601 (a GeoTIFF's date tags are "
        "read without it).",
    },
)
SINGLE_FIELDS = ("name", "scene", "split", "labels", "metadata", "footprint", "acquired")


def writer(request: Request, settings: Settings) -> SceneWriter:
    found: SceneWriter | None = getattr(request.app.state, "scene_writer", None)
    if found is None:
        found = request.app.state.scene_writer = SceneWriter(
            request.app.state.engine, settings.files.store_dir
        )
    return found


def _fields(files: int, form: dict[str, list[str]]) -> list[NewSceneFields]:
    """Each file's fields: the `scenes` JSON array, or the single-file form fields."""
    unknown = set(form) - {"scenes", *SINGLE_FIELDS}
    if unknown:
        raise BadRequestError(f"unknown form field(s) {', '.join(sorted(unknown))}")
    try:
        if "scenes" in form:
            if set(form) & set(SINGLE_FIELDS):
                raise BadRequestError("send either `scenes` or the single-file fields, not both")
            items = json.loads(form["scenes"][0])
            if not isinstance(items, list) or len(items) != files:
                raise BadRequestError(
                    f"`scenes` must be a JSON array with one object per file ({files})"
                )
            return [NewSceneFields.model_validate(item) for item in items]
        if not form:
            return [NewSceneFields() for _ in range(files)]
        if files != 1:
            raise BadRequestError("with several files, describe them in `scenes` (a JSON array)")
        item: dict[str, Any] = {}
        for key, values in form.items():
            if key == "labels":
                item["labels"] = split_commas(values)
            elif len(values) > 1:
                raise BadRequestError(f"the form field {key!r} is given {len(values)} times")
            elif key in ("metadata", "footprint"):
                item[key] = json.loads(values[0])
            else:
                item[key] = values[0]
        return [NewSceneFields.model_validate(item)]
    except json.JSONDecodeError as exc:
        raise BadRequestError(f"not valid JSON: {exc}", "bad_json") from exc
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


@router.post(
    "/scenes",
    status_code=201,
    response_model=ScenesAdded,
    responses=documented(400, 409, 413, 422),
    openapi_extra=request_body(multipart=ADD_SCHEMA),
)
async def add_scenes(
    request: Request,
    runtime: RuntimeDep,
    batcher: BatcherDep,
    settings: SettingsDep,
) -> ScenesAdded:
    """Add images to the archive: each is stored, recorded in SQL with its labels and
    metadata, embedded by the served model and searchable when the response comes (201).
    The same file twice is one scene: among new images it comes back with `duplicate` true;
    when every image of the request is a scene already, nothing is added and the answer is a
    409 (`duplicate`) naming them. Labels must be the archive's (`GET /labels`); a broken
    image, an unknown label or a taken name is a 4xx and nothing is written."""
    start = time.perf_counter()
    snapshot = runtime.current()
    with request.app.state.model_requests.admit():
        files, form = await read_uploads(request, max_files=settings.limits.max_images_per_request)
        described = _fields(len(files), form)
        images = await decode_all(files, settings)
        scenes_writer = writer(request, settings)
        for fields in described:
            await in_thread(scenes_writer.check_labels, fields.labels)
        outputs = await batcher.infer(snapshot, images)
    new = [
        NewScene(
            data=data,
            height=int(image.shape[0]),
            width=int(image.shape[1]),
            embedding=out.embedding,
            probabilities=out.probabilities,
            name=fields.name,
            folder=fields.scene,
            split=fields.split,
            labels=fields.labels,
            meta=fields.metadata,
            geo=SceneGeo(geometry_from_geojson(fields.footprint)) if fields.footprint else None,
            acquired=fields.acquired,
        )
        for (_, data), image, out, fields in zip(files, images, outputs, described, strict=True)
    ]
    added = await in_thread(scenes_writer.add, new, snapshot.model_version)
    urls = SceneUrls(request)
    if all(item.duplicate for item in added):
        raise DuplicateScenesError(
            "nothing added: "
            + ("the image is" if len(added) == 1 else "every image is")
            + " already in the archive (the same file), as `details` lists",
            [
                {"id": str(item.scene.id), "image": item.scene.name, "url": urls(item.scene.id)[0]}
                for item in added
            ],
        )
    return ScenesAdded(
        scenes=[
            AddedScene(**scene_out(urls, item.scene).model_dump(), duplicate=item.duplicate)
            for item in added
        ],
        searchable=True,
        model_version=snapshot.model_version,
        elapsed_ms=elapsed_ms(start),
    )


@router.patch("/scenes/{scene_id}", response_model=SceneOut, responses=documented(400, 404, 422))
async def patch_scene(
    request: Request, settings: SettingsDep, scene_id: SceneId, body: ScenePatch
) -> SceneOut:
    """Correct a scene's labels (all of them, from the archive's label set), scene folder,
    split, metadata, footprint or acquisition time; searches and their filters see the change
    at once."""
    given = body.model_fields_set
    changes = SceneChanges(
        labels=body.labels,
        folder=body.scene,
        split=body.split,
        meta=body.metadata,
        clear_meta="metadata" in given and body.metadata is None,
        geo=SceneGeo(geometry_from_geojson(body.footprint)) if body.footprint else None,
        clear_geo="footprint" in given and body.footprint is None,
        acquired=body.acquired,
        clear_acquired="acquired" in given and body.acquired is None,
    )
    scene = await in_thread(writer(request, settings).update, scene_id, changes)
    return scene_out(SceneUrls(request), scene)


@router.delete("/scenes/{scene_id}", status_code=204, responses=documented(404, 422))
async def delete_scene(request: Request, settings: SettingsDep, scene_id: SceneId) -> Response:
    """Remove a scene: no search returns it from the moment this returns; its row goes, and
    its file when the archive store holds it (an imported scene's file stays in its
    folder)."""
    await in_thread(writer(request, settings).delete, scene_id)
    return Response(status_code=204)
