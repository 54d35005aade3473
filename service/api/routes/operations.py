"""The web page, liveness, readiness and metrics."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from index.stores import VectorStoreUnavailableError
from service.api.bodies import error_response
from service.api.deps import CatalogDep, RuntimeDep, in_thread
from service.api.errors import documented, documented_as
from service.api.schemas.admin import Health, Readiness
from service.storage.migrate import current_revision, head_revision

STATIC = Path(__file__).resolve().parents[2] / "static"
DOCS_ASSETS = Path(str(resources.files("fastapi_offline") / "static"))
"""Swagger UI and ReDoc, installed with the project (the fastapi-offline package)."""

router = APIRouter(tags=["operations"])
"""Open to all: the pages, the API reference and the probes."""
metrics_router = APIRouter(tags=["operations"])
"""/metrics, a read: create_app gives its access (deps.read_access)."""


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The web page."""
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/admin", include_in_schema=False)
async def admin_page() -> FileResponse:
    """The admin page: add, correct and remove scenes, run and follow jobs (its API calls
    need the key; the page asks for it)."""
    return FileResponse(STATIC / "admin.html", headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    """The pages' icon (an SVG, which browsers take at the address they ask for by default)."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


SWAGGER_ASSETS: dict[str, Any] = {
    "swagger_js_url": "/docs-assets/swagger-ui-bundle.js",
    "swagger_css_url": "/docs-assets/swagger-ui.css",
    "swagger_favicon_url": "/docs-assets/favicon.png",
}
REDOC_ASSETS: dict[str, Any] = {
    "redoc_js_url": "/docs-assets/redoc.standalone.js",
    "redoc_favicon_url": "/favicon.ico",
}
REDOC_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "worker-src 'self' blob:"
)
"""The browser fetches nothing for /redoc from another host: ReDoc's bundle draws its
maker's logo from their CDN, which this Content-Security-Policy keeps it from asking for."""


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    """The interactive API documentation, from assets served by the app (no CDN)."""
    title = f"{request.app.title}: API"
    return get_swagger_ui_html(openapi_url=request.app.openapi_url, title=title, **SWAGGER_ASSETS)


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    """The API reference, from assets served by the app (no CDN, no web fonts, no logo from
    another host: `REDOC_POLICY`)."""
    title = f"{request.app.title}: API reference"
    page = get_redoc_html(
        openapi_url=request.app.openapi_url, title=title, with_google_fonts=False, **REDOC_ASSETS
    )
    page.headers["Content-Security-Policy"] = REDOC_POLICY
    return page


@metrics_router.get(
    "/metrics",
    responses=documented_as("text/plain", None, 401, 403),
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of the service (with `--workers N`, every worker's added up)."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses=documented(503))
async def readyz(runtime: RuntimeDep, catalog: CatalogDep) -> Any:
    """Model, index and database ready (503 with the reasons otherwise)."""
    reasons = []
    snapshot = runtime.snapshot
    if snapshot is None:
        reasons.append(f"model and index: {runtime.problem}")

    def database() -> tuple[str | None, int]:
        revision = current_revision(catalog.engine)
        return revision, catalog.scene_count() if revision else 0

    revision, scenes = None, 0
    try:
        revision, scenes = await in_thread(database)
    except Exception as exc:
        reasons.append(f"database: not answering ({type(exc).__name__})")
    else:
        head = head_revision()
        if revision != head:
            reasons.append(
                f"database: schema at {revision or 'nothing'}, needs {head}; run `grn db upgrade`"
            )
    index_count = 0
    if snapshot is not None:
        try:  # a vector store on a server answers over the network: off the event loop
            index_count = await in_thread(lambda: snapshot.searcher.count)
        except VectorStoreUnavailableError as exc:
            reasons.append(f"vector store: {exc}")
    if reasons or snapshot is None:
        return error_response(503, "not_ready", "; ".join(reasons), reasons)
    return Readiness(
        status="ready",
        model_version=snapshot.model_version,
        index_version=snapshot.index_version,
        index_count=index_count,
        schema_revision=revision or "",
        scenes=scenes,
        warning=runtime.problem,
    )
