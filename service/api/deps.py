"""What the routes share: the heavy objects the lifespan keeps on `app.state`, reached
through `Annotated[..., Depends(...)]` aliases (tests may swap them with
`dependency_overrides`), the access levels, and running blocking work off the event loop."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from service.api.schemas.common import MAX_SCENE_ID
from service.api.security import require_admin, require_reader, require_writer
from service.runtime import Batcher, Runtime
from service.settings import Settings
from service.storage.catalog import Catalog
from service.storage.render_cache import RenderCache

T = TypeVar("T")


def _state(name: str) -> Callable[[Request], Any]:
    """A dependency that gives `app.state.<name>`. Async on purpose: FastAPI runs a plain
    `def` dependency in a worker thread, and under load those hops (five per request) took a
    fifth of the event loop's time (py-spy, docs/service.md "Load shedding")."""

    async def get(request: Request) -> Any:
        return getattr(request.app.state, name)

    get.__name__ = f"get_{name}"
    return get


get_catalog = _state("catalog")
get_runtime = _state("runtime")
get_batcher = _state("batcher")
get_app_settings = _state("settings")
get_render_cache = _state("render_cache")

CatalogDep = Annotated[Catalog, Depends(get_catalog)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
BatcherDep = Annotated[Batcher, Depends(get_batcher)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RenderCacheDep = Annotated[RenderCache, Depends(get_render_cache)]
SceneId = Annotated[int, PathParam(ge=0, le=MAX_SCENE_ID, description="A scene id.")]

READER = [Depends(require_reader)]
"""Behind the API key (the read endpoints under GRN_READ_ACCESS=key: `read_access`)."""
ADMIN = [Depends(require_admin)]
"""Behind the API key."""
WRITER = [Depends(require_writer)]
"""Behind the API key or the write key."""


def read_access(settings: Settings) -> list[Any]:
    """The read endpoints' dependencies, given when `create_app` includes their routers:
    none while reads are open, `READER` under GRN_READ_ACCESS=key. Decided per app so that the
    OpenAPI document declares the key on them only where it is needed."""
    return READER if settings.access.read_access == "key" else []


def validated(parse: Callable[[], T]) -> T:
    """A body the route parses itself (JSON it reads, or form fields), its pydantic errors
    answered as FastAPI's own validation errors: a 422 naming each wrong field."""
    try:
        return parse()
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


async def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Run blocking work (SQL, decoding, index searches) in a worker thread."""
    return await asyncio.to_thread(function, *args)


class LoopBudget:
    """Whether a kind of short work runs on the event loop or in a worker thread. Handing work
    to a thread and back costs 0.2-0.5 ms on this project's 2-core machine (two wake-ups),
    as much as a search by id of a 2100-scene archive; work whose recent duration (an
    exponential average, thread or loop) stays under `budget_ms` runs on the loop, all other
    work, and all work until one run has been timed, in a thread."""

    def __init__(self, budget_ms: float = 2.0, weight: float = 0.2) -> None:
        self.budget = budget_ms / 1000
        self.weight = weight
        self.typical = math.inf
        """Recent seconds per run (inf until the first run)."""

    @property
    def fits(self) -> bool:
        return self.typical < self.budget

    def record(self, seconds: float) -> None:
        typical = self.typical  # a thread and the loop may both record: either value is fine
        self.typical = (
            seconds if math.isinf(typical) else typical + self.weight * (seconds - typical)
        )

    def timed(self, function: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return function()
        finally:
            self.record(time.perf_counter() - start)


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


class SceneUrls:
    """The URLs of scenes' images and thumbnails for one request. The two routes' paths are
    resolved once per app (`url_for` walks the routes, about 0.7 ms of a search's 5 ms at
    c = 1 in a py-spy profile) and joined with the request's base URL, as `url_for` does."""

    def __init__(self, request: Request) -> None:
        paths = getattr(request.app.state, "scene_url_paths", None)
        if paths is None:
            paths = request.app.state.scene_url_paths = tuple(
                self._split(str(request.app.url_path_for(route, scene_id=0)))
                for route in ("scene_image", "scene_thumbnail")
            )
        base = str(request.base_url).rstrip("/")
        (image, image_end), (thumbnail, thumbnail_end) = paths
        self._image = (base + image, image_end)
        self._thumbnail = (base + thumbnail, thumbnail_end)

    @staticmethod
    def _split(path: str) -> tuple[str, str]:
        before, after = path.rsplit("/0/", 1)
        return f"{before}/", f"/{after}"

    def __call__(self, scene_id: int) -> tuple[str, str]:
        """(image URL, thumbnail URL) of a scene."""
        return (
            f"{self._image[0]}{scene_id}{self._image[1]}",
            f"{self._thumbnail[0]}{scene_id}{self._thumbnail[1]}",
        )


def split_commas(values: list[str]) -> list[str]:
    """List parameters may repeat or separate values by commas."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def upload_schema(*, many: bool = False, **fields: Any) -> dict[str, Any]:
    """The multipart form of an upload: a required `file` (repeated when `many`) and the
    other form fields' schemas."""
    binary = {"type": "string", "format": "binary"}
    file = (
        {"type": "array", "items": binary, "description": "One or more images (repeat the field)."}
        if many
        else binary
    )
    return {"type": "object", "required": ["file"], "properties": {"file": file, **fields}}


def request_body(
    *, multipart: dict[str, Any] | None = None, json: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A route's `openapi_extra` for a body it reads itself (a multipart upload, or JSON it
    validates by hand): the required body's schema for each content type it takes."""
    content = {}
    if json is not None:
        content["application/json"] = {"schema": json}
    if multipart is not None:
        content["multipart/form-data"] = {"schema": multipart}
    return {"requestBody": {"required": True, "content": content}}


def image_query_body(model: type[BaseModel], *, not_in_form: Sequence[str]) -> dict[str, Any]:
    """The `openapi_extra` of a route that reads `model` as JSON, or as a multipart form of
    an uploaded image with the same fields less `not_in_form` (those that name an archive
    scene instead of the upload)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    form = {key: value for key, value in schema["properties"].items() if key not in not_in_form}
    return request_body(json=schema, multipart=upload_schema(**form))
