"""What the routes share: the heavy objects the lifespan keeps on `app.state`, reached
through `Annotated[..., Depends(...)]` aliases (tests may swap them with
`dependency_overrides`), the access levels, and running blocking work off the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi import Path as PathParam

from service.catalog import Catalog
from service.jobs import JobRunner
from service.runtime import Batcher, Runtime
from service.schemas import MAX_SCENE_ID
from service.security import require_admin, require_reader
from service.settings import Settings


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
get_jobs = _state("jobs")
get_app_settings = _state("settings")

CatalogDep = Annotated[Catalog, Depends(get_catalog)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
BatcherDep = Annotated[Batcher, Depends(get_batcher)]
JobsDep = Annotated[JobRunner, Depends(get_jobs)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SceneId = Annotated[int, PathParam(ge=0, le=MAX_SCENE_ID, description="A scene id.")]

READER = [Depends(require_reader)]
"""Open, or behind the API key when GRN_READ_ACCESS is `key`."""
ADMIN = [Depends(require_admin)]
"""Behind the API key."""


async def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Run blocking work (SQL, decoding, index searches) in a worker thread."""
    return await asyncio.to_thread(function, *args)


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


class SceneUrls:
    """The URLs of scenes' images and thumbnails for one request. The routes are resolved
    once (`url_for` costs tens of microseconds a call: a 1000-hit answer spent most of its
    time there) and each scene's URLs are formatted from them."""

    def __init__(self, request: Request) -> None:
        self._image = self._template(request, "scene_image")
        self._thumbnail = self._template(request, "scene_thumbnail")

    @staticmethod
    def _template(request: Request, route: str) -> tuple[str, str]:
        before, after = str(request.url_for(route, scene_id=0)).rsplit("/0/", 1)
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
