"""The web service: `create_app(settings)` builds the FastAPI application.

What it holds and how it reads:
- `service.api.lifespan`: the SQL engine, the vector store, the model runtime and its batcher
  are started before the first request, kept on `app.state` and stopped after the last;
  a poller takes up a new model and index.
- `service.api.deps`: how routes reach them (dependencies) and the access levels.
- `service.api.routes`: one router per topic, below. Routes parse and answer; the work is in
  library functions (`service.usecases.search.search_scenes`, the batcher's `infer`).
- `service.api.errors`: every error as one JSON body; `service.api.uploads`: the body limit and
  multipart reading; `service.api.observability`: request logs and metrics.
Model work runs in the batcher's thread, SQL, decoding and index searches in worker threads:
the event loop only routes.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from PIL import Image

from service.api import errors
from service.api.deps import read_access
from service.api.lifespan import lifespan
from service.api.observability import Metrics, RequestLog, configure_logging
from service.api.routes import (
    admin,
    archive,
    classify,
    concept,
    operations,
    regions,
    saved_concepts,
    search,
    writes,
)
from service.api.security import check_production
from service.api.uploads import BodyLimit
from service.runtime import tune_allocator
from service.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    check_production(settings)
    configure_logging(settings.server.log_format, settings.server.log_level)
    Image.MAX_IMAGE_PIXELS = settings.limits.max_image_pixels
    if settings.model.tune_allocator:
        tune_allocator()

    app = FastAPI(
        title="GRN scene retrieval",
        version="0.1.0",
        description=(
            "Multi-label classification and content-based retrieval of remote-sensing scenes "
            "with the Graph Relation Network. Every error answers with the same JSON body "
            "(`status`, `error`, `message`, optional `details`)."
        ),
        lifespan=lifespan,
        docs_url=None,  # served by service.api.routes.operations from local assets
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics = Metrics()

    errors.install(app)
    app.add_middleware(BodyLimit, limit=settings.limits.max_upload_bytes)
    if settings.access.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.access.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key", "Authorization", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(RequestLog, metrics=metrics)  # outermost: sees every response

    reads = read_access(settings)  # none, or the key under GRN_READ_ACCESS=key
    app.include_router(operations.router)  # the page, /docs, /healthz, /readyz: always open
    app.include_router(operations.metrics_router, dependencies=reads)  # /metrics
    app.include_router(classify.router, dependencies=reads)  # /classify, /preview
    app.include_router(search.router, dependencies=reads)  # /search, /search/density
    app.include_router(regions.router, dependencies=reads)  # /match
    app.include_router(concept.router, dependencies=reads)  # /search/concept
    app.include_router(archive.router, dependencies=reads)  # /scenes..., /labels
    app.include_router(saved_concepts.router, dependencies=reads)  # GET /concepts...
    app.include_router(writes.router)  # POST, PATCH, DELETE /scenes: the admin or write key
    app.include_router(saved_concepts.writes)  # POST, PATCH, DELETE /concepts: the same keys
    app.include_router(admin.router)  # /admin/...: the admin key
    app.mount("/static", StaticFiles(directory=operations.STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=operations.DOCS_ASSETS), name="docs-assets")
    # browser libraries from the npm registry (`grn assets`); absent, the page works without
    app.mount(
        "/vendor", StaticFiles(directory=settings.page.asset_dir, check_dir=False), name="vendor"
    )
    return app


__all__ = ["create_app"]
